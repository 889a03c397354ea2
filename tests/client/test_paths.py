"""Ids the client puts into URL paths are checked and percent-encoded by the client itself."""

from __future__ import annotations

import re

import httpx
import pytest

from trigger_django.client import TriggerClient

from .conftest import SECRET
from .fakes import Script, batch, record, sse, v2_response

HOSTILE = [
    ("", "must not be empty"),
    ("run_1\n", "contains a control character ('\\n' at position 5)"),
    ("run\x00x", "contains a control character"),
    ("run\r", "contains a control character"),
    ("run\x7f", "contains a control character"),
    ("run\x85", "contains a control character"),
    (".", "dot segment"),
    ("..", "dot segment"),
    ("run_\ud800", "not valid Unicode"),
    (42, "must be a string, not int"),
    (None, "must be a string, not NoneType"),
]


@pytest.mark.parametrize(("value", "message"), HOSTILE)
async def test_hostile_ids_are_refused_before_any_request(make_client, value, message):
    script = Script()
    client = make_client(script)
    with pytest.raises(ValueError, match="^run_id .*" + re.escape(message)):
        client.read_stream(value, "default")
    with pytest.raises(ValueError, match="stream key"):
        client.read_stream("run_1", value)
    with pytest.raises(ValueError, match="run_id"):
        await client.send_input(value, "approval", 1)
    with pytest.raises(ValueError, match="input stream id"):
        await client.send_input("run_1", value, 1)
    with pytest.raises(ValueError, match="task_id"):
        await client.trigger(value, {})
    assert script.requests == []


ENCODED = [
    ("a/b", "a%2Fb"),  # cannot add a path segment
    ("a%2Fb", "a%252Fb"),  # nor smuggle an escape
    ("a b", "a%20b"),
    ("a?b#c", "a%3Fb%23c"),
    ("x;y", "x%3By"),
    ("caf\u00e9", "caf%C3%A9"),
    ("$trigger.input:approval", "$trigger.input:approval"),  # as the SDK sends it
    ("ai-output_2.v~1", "ai-output_2.v~1"),
    ("...", "..."),
]


@pytest.mark.parametrize(("value", "raw"), ENCODED)
async def test_ids_are_percent_encoded_as_one_segment(make_client, value, raw):
    script = Script(
        v2_response(sse(batch(record(0, "a")))),
        httpx.Response(200, json={"ok": True}),
        httpx.Response(200, json={"id": "run_1", "isCached": False}),
    )
    client = make_client(script)
    assert [p.chunk async for p in client.read_stream(value, value)] == ["a"]
    await client.send_input(value, value, 1)
    await client.trigger(value, {})
    paths = [request.url.raw_path.decode() for request in script.requests]
    assert paths == [
        f"/realtime/v1/streams/{raw}/{raw}",
        f"/realtime/v1/streams/{raw}/input/{raw}",
        f"/api/v1/tasks/{raw}/trigger",
    ]


def test_path_segment_is_public_for_other_callers():
    from trigger_django.client import path_segment

    assert path_segment("run_1", "run_id") == "run_1"
    with pytest.raises(ValueError, match=r"^run_id 'run_1\\n' contains a control character"):
        path_segment("run_1\n", "run_id")


def test_client_is_importable_without_django_settings():
    # The checks live in the client, usable with no Django layer in front of it.
    assert TriggerClient("http://trigger.test", secret_key=SECRET)
