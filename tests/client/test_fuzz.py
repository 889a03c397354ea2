"""Hypothesis fuzzing of what arrives from upstream: the SSE decoder, the v1 and v2 parsers and
the whole reader. Malformed frames are skipped (with a log) or end in the client's own typed
errors; nothing else may escape."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trigger_django.client import ServerSentEvent, SSEDecoder, StreamPart, TriggerClient
from trigger_django.client._client import _RetryableFailure, _StreamState, _v1_part, _v2_parts

from .fakes import ChunkStream, RecordingSleep, Script

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
# Texts that look like numbers in odd ways: non-ASCII digits, huge digit runs, signs, commas.
numberish = st.one_of(
    st.text(alphabet="0123456789-,+ \u00b2\u0663", max_size=12),
    st.integers(min_value=0, max_value=6000).map(lambda n: "9" * n),
    st.text(max_size=12),
)
deep = st.integers(min_value=1, max_value=50_000).map(lambda n: "[" * n + "]" * (n % 3))


def envelopes() -> st.SearchStrategy[str]:
    envelope = st.fixed_dictionaries(
        {}, optional={"data": json_values, "id": json_values | st.text(max_size=6)}
    )
    return st.one_of(
        envelope.map(json.dumps), st.text(max_size=30), deep, json_values.map(json.dumps)
    )


records = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "seq_num": st.integers() | json_values,
            "timestamp": st.integers() | json_values,
            "headers": json_values
            | st.lists(st.lists(st.text(max_size=4) | json_values, max_size=3), max_size=3),
            "body": envelopes() | json_values,
        },
    ),
)
batch_data = st.one_of(
    st.fixed_dictionaries(
        {}, optional={"records": st.lists(records, max_size=6) | json_values, "tail": json_values}
    ).map(json.dumps),
    json_values.map(json.dumps),
    st.text(max_size=40),
    deep,
    # Integers past Python's 4,300-digit str/int conversion limit.
    st.sampled_from(["seq_num", "timestamp"]).map(
        lambda name: '{"records":[{"' + name + '":' + "9" * 5000 + ',"body":"{}"}]}'
    ),
)
events = st.builds(
    ServerSentEvent,
    data=batch_data,
    event=st.sampled_from(["batch", "ping", "error", "message", ""]) | st.text(max_size=6),
    id=st.none() | numberish,
)


def _check_part(part: Any) -> None:
    assert isinstance(part, StreamPart)
    assert isinstance(part.id, str)
    assert type(part.timestamp) is int
    assert part.record_id is None or isinstance(part.record_id, str)
    assert all(isinstance(n, str) and isinstance(v, str) for n, v in part.headers)


@FUZZ
@given(st.lists(events, max_size=6), st.none() | numberish)
def test_v2_parser_only_yields_parts_or_a_retryable_failure(events, cursor):
    state = _StreamState(cursor, False, "t")
    for event in events:
        try:
            for part in _v2_parts(event, state):
                _check_part(part)
                assert state.cursor == part.id
        except _RetryableFailure:
            assert event.event == "error"
        assert state.cursor is None or isinstance(state.cursor, str)


@FUZZ
@given(events)
def test_v1_parser_turns_every_event_into_a_part(event):
    state = _StreamState(None, False, "t")
    part = _v1_part(event, state)
    _check_part(part)
    assert part.id == ("unknown" if event.id is None else event.id)


@FUZZ
@given(st.binary(max_size=400), st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_sse_decoder_never_fails_and_chunking_does_not_matter(body, cuts):
    whole = SSEDecoder().feed(body) if body else []
    decoder = SSEDecoder()
    pieces: list[ServerSentEvent] = []
    start = 0
    for cut in sorted(cuts):
        pieces += decoder.feed(body[start:cut])
        start = max(start, cut)
    pieces += decoder.feed(body[start:])
    assert pieces == whole
    assert all(isinstance(e.data, str) and isinstance(e.event, str) for e in whole)


sse_bodies = st.lists(
    st.one_of(
        st.builds(
            lambda e, i, d: (
                (f"event: {e}\n" if e else "")
                + (f"id: {i}\n" if i is not None else "")
                + "".join(f"data: {line}\n" for line in d.split("\n"))
                + "\n"
            ),
            st.sampled_from(["batch", "ping", "error", ""]),
            st.none() | numberish.filter(lambda s: "\n" not in s and "\r" not in s),
            batch_data,
        ),
        st.text(max_size=30),
    ),
    max_size=6,
).map(lambda parts: "".join(parts).encode("utf-8", "surrogatepass"))


@FUZZ
@given(sse_bodies, st.sampled_from(["v1", "v2"]))
def test_the_reader_survives_any_body(body, version):
    async def run() -> list[StreamPart]:
        headers = {"content-type": "text/event-stream"}
        if version == "v2":
            headers["x-stream-version"] = "v2"
        # Every connection gets the same body; an `event: error` makes the reader retry, so
        # the script has a few answers before a clean, empty end.
        answers = [
            httpx.Response(200, headers=headers, stream=ChunkStream([body])) for _ in range(3)
        ]
        answers.append(httpx.Response(200, headers=headers, stream=ChunkStream([])))
        script = Script(*answers)
        async with TriggerClient(
            "http://trigger.test",
            secret_key="tr_dev_fuzz",
            transport=script.transport,
            retry_sleep=RecordingSleep(),
        ) as client:
            stream = client.read_stream("run_1")
            parts = []
            async for part in stream:
                parts.append(part)
                if len(script.requests) >= 4:
                    break
            await stream.aclose()
            return parts

    for part in asyncio.run(run()):
        _check_part(part)


# Regressions the fuzzing found (each raised out of the parser before).


def test_deeply_nested_json_is_kept_as_the_raw_text():
    text = "[" * 100_000
    part = _v1_part(ServerSentEvent(text, id="1-0"), _StreamState(None, False, "t"))
    assert part.chunk == text  # as safeParseJSON, when JSON.parse gives up


def test_odd_numeric_ids_fall_back_to_now_for_the_timestamp():
    state = _StreamState(None, False, "t")
    for stream_id in ["9" * 5000, "\u00b2-0", "-5-0"]:
        part = _v1_part(ServerSentEvent("1", id=stream_id), state)
        assert part.timestamp > 1_700_000_000_000
        assert part.id == stream_id
    assert _v1_part(ServerSentEvent("1", id=" +12x-0"), state).timestamp == 12  # parseInt
    assert _v1_part(ServerSentEvent("1", id="0-1"), state).timestamp == 0


def test_a_huge_batch_id_still_moves_the_cursor_forward_only():
    state = _StreamState("7", False, "t")
    list(_v2_parts(ServerSentEvent("not json", "batch", "9" * 5000 + ",1,1"), state))
    assert state.cursor == "9" * 5000
    list(_v2_parts(ServerSentEvent("not json", "batch", "8,1,1"), state))
    assert state.cursor == "9" * 5000


# -- the run shape: rows, messages and columns from upstream ------------------------------------

from trigger_django.client import RunShapeError  # noqa: E402
from trigger_django.client._client import _ShapeState  # noqa: E402
from trigger_django.client._runs import run_from_row  # noqa: E402

VALID_ROW = {
    "id": "cm1",
    "friendlyId": "run_1",
    "taskIdentifier": "t",
    "status": "EXECUTING",
    "createdAt": "2025-01-01T00:00:00.000",
    "updatedAt": "2025-01-01T00:00:00.000",
}
COLUMN_TYPES = ["text", "int4", "int8", "float8", "bool", "jsonb", "timestamp", "weird"]
columns = st.sampled_from(
    [
        "id",
        "friendlyId",
        "taskIdentifier",
        "status",
        "createdAt",
        "updatedAt",
        "completedAt",
        "number",
        "isTest",
        "costInCents",
        "runTags",
        "realtimeStreams",
        "error",
        "metadata",
        "metadataType",
        "output",
        "outputType",
        "payload",
        "payloadType",
    ]
)
column_values = st.none() | st.text(max_size=30) | numberish | deep | json_values.map(json.dumps)
schemas = st.dictionaries(
    columns,
    st.fixed_dictionaries(
        {"type": st.sampled_from(COLUMN_TYPES)},
        optional={"dims": st.integers(min_value=0, max_value=2) | json_values},
    )
    | json_values,
    max_size=8,
)
shape_messages = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {
                "key": st.sampled_from(["k1", "k2"]),
                "value": st.dictionaries(columns, column_values, max_size=10).map(
                    lambda overrides: {**VALID_ROW, **overrides}
                )
                | st.dictionaries(columns, column_values, max_size=10)
                | json_values,
                "headers": st.fixed_dictionaries(
                    {"operation": st.sampled_from(["insert", "update", "delete", "x"])}
                )
                | json_values,
            }
        ),
        st.sampled_from(
            [
                {"headers": {"control": "up-to-date"}},
                {"headers": {"control": "must-refetch"}},
            ]
        ),
        json_values,
    ),
    max_size=8,
)


@FUZZ
@given(schemas, shape_messages)
def test_shape_messages_only_ever_give_runs_or_a_shape_error(schema, messages):
    state = _ShapeState()
    state.schema = schema if isinstance(schema, dict) else {}
    try:
        rows = state._apply(messages)
    except RunShapeError:
        return
    for row in rows:
        try:
            run = run_from_row(row, None, None)
        except RunShapeError:
            continue
        assert isinstance(run.id, str)
        assert run.created_at.tzinfo is not None
        assert isinstance(run.tags, tuple)
