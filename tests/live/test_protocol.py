"""The wire protocol's parsing and encoding, without sockets."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trigger_django.client import NotFoundError, UpstreamUnavailableError
from trigger_django.live.protocol import (
    MAX_MESSAGE_CHARS,
    Ack,
    BadMessage,
    Subscribe,
    Unsubscribe,
    cursor_position,
    encode_part,
    error_message,
    parse_message,
    parts_frame,
    upstream_error,
)
from trigger_django.upstream import UpstreamConfigurationError

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
)


@given(st.one_of(st.text(), JSON.map(json.dumps), st.none()))
def test_any_frame_parses_to_a_message_or_a_bad_message(text: str | None) -> None:
    try:
        message: object = parse_message(text)
    except BadMessage as exc:
        message = exc
    # Parsed, or refused with a reason: never any other exception.
    assert isinstance(message, Subscribe | Unsubscribe | Ack) or str(message)


@given(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["subscribe", "ack", "unsubscribe"])},
        optional={name: JSON for name in ("sub", "run_id", "key", "cursor", "timeout", "ticket")},
    )
)
def test_any_object_parses_to_a_message_or_a_bad_message(content: dict[str, object]) -> None:
    with contextlib.suppress(BadMessage):
        assert isinstance(parse_message(json.dumps(content)), Subscribe | Unsubscribe | Ack)


def test_a_subscribe_parses_whole() -> None:
    text = json.dumps(
        {
            "type": "subscribe",
            "sub": "s1",
            "ticket": "t",
            "run_id": "run_1",
            "key": "ai-output",
            "timeout": 5,
            "start_index": None,
            "cursor": "1735689600000-3",
        }
    )
    assert parse_message(text) == Subscribe(
        "s1", "t", "run_1", "ai-output", 5, None, "1735689600000-3"
    )


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[" * 5000 + "]" * 5000, "nested too deeply"),
        ("x" * (MAX_MESSAGE_CHARS + 1), "at most"),
        ('{"type": "ack", "sub": "s1", "cursor": "3\\n"}', "cursor"),
        ('{"type": "unsubscribe", "sub": "s1\\n"}', "'sub'"),
        ('{"type": "subscribe", "sub": "s1", "run_id": "run_1\\n", "key": "k"}', "run_id"),
        ('{"type": "subscribe", "sub": "s1", "run_id": "run_1", "key": ".."}', "key"),
        (None, "binary"),
    ],
)
def test_malformed_frames_say_what_is_wrong(text: str | None, reason: str) -> None:
    with pytest.raises(BadMessage, match=reason):
        parse_message(text)


def test_a_parts_frame_is_the_json_of_its_pre_encoded_parts() -> None:
    parts = [encode_part("7", {"a": "é"}, 1, 0), encode_part("7-0", "x\n", 2, 1)]
    frame = parts_frame([("s1", parts, False), ("s2", parts[:1], True)])
    assert json.loads(frame) == {
        "type": "parts",
        "streams": [
            {
                "sub": "s1",
                "parts": [
                    {"id": "7", "chunk": {"a": "é"}, "timestamp": 1},
                    {"id": "7-0", "chunk": "x\n", "timestamp": 2, "i": 1},
                ],
            },
            {"sub": "s2", "parts": [{"id": "7", "chunk": {"a": "é"}, "timestamp": 1}], "ack": True},
        ],
    }


def test_a_subscribe_cursor_is_after_every_part_of_its_id() -> None:
    assert cursor_position(None) < (0, 0)
    assert (5, 0) < cursor_position("5") < (6, 0)
    assert (100, 0, 7) < cursor_position("100-0") < (100, 1, 0)


def test_error_messages_name_the_party_and_the_status() -> None:
    assert upstream_error(NotFoundError(404, "Run not found"), "run_x", "k") == (
        404,
        "Could not read stream 'k' of run run_x: Trigger.dev answered 404 (Run not found).",
    )
    status, text = upstream_error(UpstreamConfigurationError("No key"), "run_x", "k")
    assert (status, "No key" in text) == (503, True)
    assert upstream_error(UpstreamUnavailableError("down"), "run_x", "k")[0] == 503
    assert upstream_error(ValueError("bug"), "run_x", "k") == (
        500,
        "Could not read stream 'k' of run run_x: internal error in the server.",
    )
    assert json.loads(error_message("s1", 429, "later", retry_after=1.5)) == {
        "type": "error",
        "sub": "s1",
        "status": 429,
        "message": "later",
        "retry_after": 1.5,
    }
