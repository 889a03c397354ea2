"""Properties of the storage and SSE framing, in-process (no server): any split of the NDJSON
ingest reads back as the original parts, in both framings, from any start position."""

from __future__ import annotations

import asyncio
import itertools
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from trigger_django.emulator.sse import ReadSession, serve_stream
from trigger_django.emulator.state import Stream, js_json, parse_redis_id, parse_v2_last_event_id

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=6,
)


def _split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({cut % (len(text) + 1) for cut in cuts})
    bounds = [0, *points, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds) if text[a:b]]


def _read(stream: Stream, start: int = 0) -> str:
    async def run() -> str:
        sent: list[bytes] = []

        async def send(data: bytes) -> None:
            sent.append(data)

        session = ReadSession(
            stream=stream,
            version=stream.version,
            start=start,
            idle_timeout=0.001,
            ping_interval=60.0,
            disconnected=asyncio.get_running_loop().create_future(),
            closing=asyncio.Event(),
        )
        await serve_stream(session, send)
        return b"".join(sent).decode()

    return asyncio.run(run())


def _v1_events(body: str) -> list[tuple[str, str]]:
    events = [event for event in body.split("\n\n") if event]
    parts = []
    for event in events:
        id_line, data_line = event.split("\n", 1)
        parts.append((id_line.removeprefix("id: "), data_line.removeprefix("data: ")))
    return parts


def _v1_parts(body: str) -> list[tuple[str, object]]:
    return [(entry_id, json.loads(data)) for entry_id, data in _v1_events(body)]


def _v2_parts(body: str) -> list[tuple[int, object]]:
    assert body.endswith("data: [DONE]\n\n")
    parts = []
    for line in body.split("\n"):
        if line.startswith('data: {"records"'):
            for record in json.loads(line.removeprefix("data: "))["records"]:
                parts.append((record["seq_num"], json.loads(record["body"])["data"]))
    return parts


@settings(max_examples=30, deadline=None)
@given(values=st.lists(json_values, min_size=1, max_size=12), cuts=st.lists(st.integers(0, 999)))
def test_v1_ingest_reads_back_whatever_the_split(values, cuts):
    text = "".join(js_json(value) + "\n" for value in values)
    stream = Stream("run_p", "out", "v1")
    for index, chunk in enumerate(_split(text, cuts)):
        stream.ingest(chunk, client_id="w", chunk_index=index)

    parts = _v1_parts(_read(stream))

    assert [value for _, value in parts] == values
    ids = [parse_redis_id(entry_id) for entry_id, _ in parts]
    assert ids == sorted(ids)
    # Resuming after an event's id never repeats an earlier entry. (A line that an earlier
    # entry began comes back truncated, as from Redis: v1 resume is approximate, §11.)
    for entry_id, _ in parts[:3]:
        resumed = _v1_events(_read(stream, stream.v1_start(entry_id)))
        assert all(parse_redis_id(i) > parse_redis_id(entry_id) for i, _ in resumed)


@settings(max_examples=30, deadline=None)
@given(
    values=st.lists(json_values, min_size=1, max_size=12),
    cuts=st.lists(st.integers(0, 999)),
    last_seen=st.integers(-1, 14),
)
def test_v2_ingest_reads_back_whatever_the_split(values, cuts, last_seen):
    text = "".join(js_json(value) + "\n" for value in values)
    stream = Stream("run_p", "out", "v2")
    for index, chunk in enumerate(_split(text, cuts)):
        stream.ingest(chunk, client_id="w", chunk_index=index)

    assert _v2_parts(_read(stream)) == list(enumerate(values))
    start = min(parse_v2_last_event_id(str(last_seen)) if last_seen >= 0 else 0, len(stream))
    assert _v2_parts(_read(stream, start)) == list(enumerate(values))[last_seen + 1 :]


@settings(max_examples=20, deadline=None)
@given(values=st.lists(json_values, min_size=1, max_size=30))
def test_appended_parts_read_back_in_both_framings(values):
    for version in ("v1", "v2"):
        stream = Stream("run_p", "out", version)
        for value in values:
            stream.append_part(value)
        body = _read(stream)
        parts = _v1_parts(body) if version == "v1" else _v2_parts(body)
        assert [value for _, value in parts] == values
