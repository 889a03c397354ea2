"""Output streams over real HTTP: framing, start positions, timeouts, the write routes."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from .conftest import (
    AUTH,
    UNREGISTERED_TASK,
    mask_timestamps,
    read_bodies,
    read_body,
    read_records,
    v1_ids,
)


def _append(client: httpx.Client, run_id: str, key: str, text: str, part_id: str) -> None:
    response = client.post(
        f"/realtime/v1/streams/{run_id}/self/{key}/append",
        content=text.encode(),
        headers={**AUTH, "X-Part-Id": part_id},
    )
    assert response.status_code == 200
    assert response.json() == {"ok": True}


def _records(body: bytes) -> list[dict]:
    records = []
    for line in body.decode().splitlines():
        if line.startswith('data: {"records"'):
            records.extend(json.loads(line.removeprefix("data: "))["records"])
    return records


def test_v2_framing_is_byte_exact(emulator, http):
    run_id, _ = emulator.trigger(UNREGISTERED_TASK, {}, stream_version="v2")
    _append(http, run_id, "out", "raw text", "p1")
    _append(http, run_id, "out", '{"n":1}', "p2")

    response = http.get(
        f"/realtime/v1/streams/{run_id}/out", headers={**AUTH, "Timeout-Seconds": "1"}
    )

    body1 = '{"data":"raw text","id":"p1"}'
    body2 = '{"data":"{\\"n\\":1}","id":"p2"}'
    metered = 8 + len(body1) + 8 + len(body2)
    assert (
        mask_timestamps(response.content)
        == (
            f"event: batch\nid: 1,2,{metered}\n"
            'data: {"records":['
            '{"seq_num":0,"timestamp":T,"body":"{\\"data\\":\\"raw text\\",\\"id\\":\\"p1\\"}"},'
            '{"seq_num":1,"timestamp":T,"body":"{\\"data\\":\\"{\\\\\\"n\\\\\\":1}\\",\\"id\\":\\"p2\\"}"}'
            "]}\n\n"
            # Caught up: S2 enters follow mode with a heartbeat that names the tail.
            'event: ping\ndata: {"timestamp":T,"tail":{"seq_num":2,"timestamp":T}}\n\n'
            "data: [DONE]\n\n"
        ).encode()
    )
    assert response.headers["x-stream-version"] == "v2"
    assert response.headers["access-control-expose-headers"] == "*"
    assert response.headers["content-type"] == "text/event-stream"
    assert [json.loads(r["body"])["data"] for r in _records(response.content)] == [
        "raw text",
        '{"n":1}',
    ]


def test_v1_framing_is_byte_exact(emulator_v1, http_v1):
    run_id, _ = emulator_v1.trigger(UNREGISTERED_TASK, {})
    stream = f"/realtime/v1/streams/{run_id}/self/out"
    # Two body reads: the first ends mid-line, the second completes it and adds a blank line.
    assert http_v1.post(stream, content=b'{"n":1}\n"two"\n{"n":', headers=AUTH).status_code == 200
    assert http_v1.post(stream, content=b"3}\n\n", headers=AUTH).status_code == 200
    _append(http_v1, run_id, "out", "raw", "ignored-on-v1")

    response = http_v1.get(
        f"/realtime/v1/streams/{run_id}/out", headers={**AUTH, "Timeout-Seconds": "1"}
    )

    ids = v1_ids(response.content)
    assert len(ids) == 4
    first, second, third = ids[0], ids[2], ids[3]
    assert ids[1] == first
    assert len({first, second, third}) == 3
    assert (
        response.content
        == (
            f'id: {first}\ndata: {{"n":1}}\n\n'
            f'id: {first}\ndata: "two"\n\n'
            f'id: {second}\ndata: {{"n":3}}\n\n'
            f'id: {third}\ndata: "raw"\n\n'
        ).encode()
    )
    assert "x-stream-version" not in response.headers


def test_v1_trailing_partial_line_is_flushed_at_the_end(emulator_v1, http_v1):
    run_id, _ = emulator_v1.trigger(UNREGISTERED_TASK, {})
    stream = f"/realtime/v1/streams/{run_id}/self/out"
    http_v1.post(stream, content=b'{"n":1}\n  {"tail":true}  ', headers=AUTH)

    body = read_body(http_v1, f"/realtime/v1/streams/{run_id}/out")

    (entry_id,) = set(v1_ids(body))
    assert (
        body
        == (
            f'id: {entry_id}\ndata: {{"n":1}}\n\nid: {entry_id}\ndata: {{"tail":true}}\n\n'
        ).encode()
    )


def test_v2_run_reads_v1_ingest_as_enveloped_records(emulator, http):
    run_id, _ = emulator.trigger(UNREGISTERED_TASK, {}, stream_version="v2")
    stream = f"/realtime/v1/streams/{run_id}/self/out"
    http.post(stream, content=b'{"n":1}\n"two"\n{"n":', headers=AUTH)
    http.post(stream, content=b"3}\n\nnot json\n", headers=AUTH)

    records = read_records(http, f"/realtime/v1/streams/{run_id}/out", 4)

    assert [r["seq_num"] for r in records] == [0, 1, 2, 3]
    envelopes = [json.loads(r["body"]) for r in records]
    assert [e["data"] for e in envelopes] == [{"n": 1}, "two", {"n": 3}, "not json"]
    assert all(len(e["id"]) == 7 for e in envelopes)
    assert len({e["id"] for e in envelopes}) == 4


async def test_v2_last_event_id_is_exclusive(emulator):
    run_id, _ = emulator.trigger("echo-parts", {"parts": [0, 1, 2, 3, 4]})
    emulator.wait_for_status(run_id, "COMPLETED_SUCCESSFULLY")
    path = f"/realtime/v1/streams/{run_id}/default"
    last_event_ids = ["2", "2-7", "0", "4", "garbage"]

    bodies = await read_bodies(
        emulator.url, [(path, {"Last-Event-ID": value}) for value in last_event_ids]
    )

    seqs = {
        value: [r["seq_num"] for r in _records(body)]
        for value, body in zip(last_event_ids, bodies, strict=True)
    }
    assert seqs == {
        "2": [3, 4],
        "2-7": [3, 4],
        "0": [1, 2, 3, 4],
        "4": [],
        "garbage": [0, 1, 2, 3, 4],
    }


async def test_v1_last_event_id_is_exclusive_and_a_bare_number_means_n_0(emulator_v1):
    run_id, _ = emulator_v1.trigger("echo-parts", {"parts": ["a", "b", "c"]})
    emulator_v1.wait_for(lambda: emulator_v1.run(run_id)["status"] == "COMPLETED_SUCCESSFULLY")
    path = f"/realtime/v1/streams/{run_id}/default"
    (everything,) = await read_bodies(emulator_v1.url, [(path, {})])
    ids = v1_ids(everything)
    assert len(ids) == 3

    after_first, after_two, after_last = await read_bodies(
        emulator_v1.url,
        [(path, {"Last-Event-ID": value}) for value in (ids[0], "2", ids[-1])],
    )

    assert v1_ids(after_first) == ids[1:]
    assert b'data: "a"' not in after_first
    # Redis reads "2" as 2-0, older than every real entry: startIndex has no effect on v1.
    assert v1_ids(after_two) == ids
    assert after_last == b""


async def test_stream_start_latest_skips_existing_parts(emulator):
    run_id, _ = emulator.trigger(UNREGISTERED_TASK, {}, stream_version="v2")
    async with httpx.AsyncClient(base_url=emulator.url, timeout=10.0) as client:
        await client.post(
            f"/realtime/v1/streams/{run_id}/self/out/append", content=b"old", headers=AUTH
        )
        headers = {**AUTH, "X-Trigger-Stream-Start": "latest", "Timeout-Seconds": "5"}
        async with client.stream(
            "GET", f"/realtime/v1/streams/{run_id}/out", headers=headers
        ) as response:
            assert response.status_code == 200
            await client.post(
                f"/realtime/v1/streams/{run_id}/self/out/append", content=b"new", headers=AUTH
            )
            async for line in response.aiter_lines():
                if line.startswith('data: {"records"'):
                    records = json.loads(line.removeprefix("data: "))["records"]
                    break
    assert [(r["seq_num"], json.loads(r["body"])["data"]) for r in records] == [(1, "new")]


async def test_v2_start_beyond_the_tail_is_clamped_to_the_tail(emulator):
    run_id, _ = emulator.trigger(UNREGISTERED_TASK, {}, stream_version="v2")
    append = f"/realtime/v1/streams/{run_id}/self/out/append"
    async with httpx.AsyncClient(base_url=emulator.url, timeout=10.0) as client:
        await client.post(append, content=b"zero", headers=AUTH)
        headers = {**AUTH, "Last-Event-ID": "99", "Timeout-Seconds": "5"}
        async with client.stream(
            "GET", f"/realtime/v1/streams/{run_id}/out", headers=headers
        ) as response:
            await client.post(append, content=b"one", headers=AUTH)
            async for line in response.aiter_lines():
                if line.startswith('data: {"records"'):
                    records = json.loads(line.removeprefix("data: "))["records"]
                    break
    assert [(r["seq_num"], json.loads(r["body"])["data"]) for r in records] == [(1, "one")]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1", "Timeout seconds must be greater than 0"),
        ("601", "Timeout seconds must be less than 600"),
        ("-5abc", "Timeout seconds must be greater than 0"),
    ],
)
def test_timeout_seconds_errors_on_output_streams(emulator, http, value, message):
    run_id, _ = emulator.trigger(UNREGISTERED_TASK, {})
    response = http.get(
        f"/realtime/v1/streams/{run_id}/out", headers={**AUTH, "Timeout-Seconds": value}
    )
    assert response.status_code == 400
    assert response.text == message


@pytest.mark.parametrize("value", ["0", "abc", "600", "1.9"])
def test_timeout_seconds_zero_and_nan_are_unset_on_output_streams(emulator, value):
    run_id, _ = emulator.trigger(UNREGISTERED_TASK, {})
    with (
        httpx.Client(base_url=emulator.url, timeout=10.0) as client,
        client.stream(
            "GET", f"/realtime/v1/streams/{run_id}/out", headers={**AUTH, "Timeout-Seconds": value}
        ) as response,
    ):
        assert response.status_code == 200


@pytest.mark.parametrize("value", ["0", "abc", "601", "-1"])
def test_timeout_seconds_errors_on_input_streams(emulator, http, value):
    run_id, _ = emulator.trigger(UNREGISTERED_TASK, {})
    response = http.get(
        f"/realtime/v1/streams/{run_id}/input/approval",
        headers={**AUTH, "Timeout-Seconds": value},
    )
    assert response.status_code == 400
    assert response.text == "Invalid timeout seconds"


def test_v2_idle_close_ends_with_done(emulator, http):
    run_id, _ = emulator.trigger(UNREGISTERED_TASK, {}, stream_version="v2")
    assert mask_timestamps(read_body(http, f"/realtime/v1/streams/{run_id}/never-written")) == (
        b'event: ping\ndata: {"timestamp":T,"tail":{"seq_num":0,"timestamp":0}}\n\ndata: [DONE]\n\n'
    )


def test_v1_idle_close_ends_without_marker(emulator_v1, http_v1):
    run_id, _ = emulator_v1.trigger(UNREGISTERED_TASK, {})
    assert read_body(http_v1, f"/realtime/v1/streams/{run_id}/never-written") == b""


def test_headers_arrive_before_any_record(emulator):
    run_id, _ = emulator.trigger(UNREGISTERED_TASK, {}, stream_version="v2")
    # The read timeout is far below the idle timeout: only flushed headers let this return.
    timeout = httpx.Timeout(10.0, read=3.0)
    with (
        httpx.Client(base_url=emulator.url, timeout=timeout) as client,
        client.stream(
            "GET", f"/realtime/v1/streams/{run_id}/empty", headers={**AUTH, "Timeout-Seconds": "60"}
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["x-stream-version"] == "v2"
    assert emulator.run(run_id)["streams"] == {"empty": 0}


async def test_chunked_post_is_visible_to_readers_while_open(emulator):
    run_id, _ = emulator.trigger(UNREGISTERED_TASK, {}, stream_version="v2")
    reader_saw_first = asyncio.Event()
    post_open_when_seen: list[bool] = []

    async def ndjson_body():
        yield b'{"n":1}\n'
        await asyncio.wait_for(reader_saw_first.wait(), 10)
        yield b'{"n":2}\n'

    async with httpx.AsyncClient(base_url=emulator.url, timeout=10.0) as client:
        post = asyncio.create_task(
            client.post(
                f"/realtime/v1/streams/{run_id}/self/live",
                content=ndjson_body(),
                headers={**AUTH, "X-Client-Id": "writer01"},
            )
        )
        chunks: list[object] = []
        headers = {**AUTH, "Timeout-Seconds": "10"}
        async with client.stream(
            "GET", f"/realtime/v1/streams/{run_id}/live", headers=headers
        ) as response:
            async for line in response.aiter_lines():
                if not line.startswith('data: {"records"'):
                    continue
                for record in json.loads(line.removeprefix("data: "))["records"]:
                    chunks.append(json.loads(record["body"])["data"])
                if chunks == [{"n": 1}]:
                    post_open_when_seen.append(not post.done())
                    reader_saw_first.set()
                if len(chunks) == 2:
                    break
        posted = await post
    assert chunks == [{"n": 1}, {"n": 2}]
    assert post_open_when_seen == [True]
    assert posted.status_code == 200
    assert posted.content == b""
    assert emulator.run(run_id)["realtimeStreams"] == ["live"]


def test_head_reports_last_chunk_index_per_client(emulator_v1, http_v1):
    run_id, _ = emulator_v1.trigger(UNREGISTERED_TASK, {})
    url = f"/realtime/v1/streams/{run_id}/self/out"

    def last_index(client_id: str) -> str:
        response = http_v1.head(url, headers={**AUTH, "X-Client-Id": client_id})
        assert response.status_code == 200
        return response.headers["x-last-chunk-index"]

    assert last_index("abc") == "-1"
    http_v1.post(url, content=b'"a"\n', headers={**AUTH, "X-Client-Id": "abc"})
    assert last_index("abc") == "0"
    resumed = {**AUTH, "X-Client-Id": "abc", "X-Resume-From-Chunk": "5"}
    http_v1.post(url, content=b'"b"\n', headers=resumed)
    assert last_index("abc") == "5"
    assert last_index("other") == "-1"
    bad = http_v1.post(url, content=b'"c"\n', headers={**AUTH, "X-Resume-From-Chunk": "-2"})
    assert (bad.status_code, bad.text) == (400, "Invalid X-Resume-From-Chunk header value: -2")
    assert http_v1.get(url, headers=AUTH).text == "Only HEAD requests are allowed for this endpoint"


def test_put_answers_v1_and_records_the_key(emulator, http):
    run_id, _ = emulator.trigger(UNREGISTERED_TASK, {}, stream_version="v2")
    for key in ("first", "second", "first"):
        response = http.put(f"/realtime/v1/streams/{run_id}/self/{key}", headers=AUTH)
        assert response.status_code == 202
        assert response.json() == {"version": "v1"}
        assert not any(name.startswith("x-s2-") for name in response.headers)
    assert emulator.run(run_id)["realtimeStreams"] == ["first", "second"]


def test_write_errors(emulator, http):
    run_id, _ = emulator.trigger(UNREGISTERED_TASK, {})
    missing = http.put("/realtime/v1/streams/run_missing/self/out", headers=AUTH)
    assert (missing.status_code, missing.text) == (404, "Run not found")
    parent = http.put(f"/realtime/v1/streams/{run_id}/parent/out", headers=AUTH)
    assert (parent.status_code, parent.text) == (404, "Target not found")
    no_body = http.post(f"/realtime/v1/streams/{run_id}/self/out", headers=AUTH)
    assert (no_body.status_code, no_body.text) == (400, "No body provided")


def test_append_requires_content_length_and_limits_size(emulator, http):
    run_id, _ = emulator.trigger(UNREGISTERED_TASK, {})
    url = f"/realtime/v1/streams/{run_id}/self/out/append"

    def chunked():
        yield b"part"

    no_length = http.post(url, content=chunked(), headers=AUTH)
    assert no_length.status_code == 413
    assert no_length.json() == {"error": "Request body too large"}
    too_big = http.post(url, content=b"x" * (512 * 1024 + 1), headers=AUTH)
    assert too_big.status_code == 413
    at_limit = http.post(url, content=b"x" * (512 * 1024), headers=AUTH)
    assert at_limit.json() == {"ok": True}
    assert emulator.run(run_id)["streams"] == {"out": 1}


def test_completed_run_rejects_writes(emulator, http):
    run_id, _ = emulator.trigger(UNREGISTERED_TASK, {})
    emulator.complete_run(run_id)

    put = http.put(f"/realtime/v1/streams/{run_id}/self/out", headers=AUTH)
    assert (put.status_code, put.text) == (
        400,
        "Cannot initialize a realtime stream on a completed run",
    )
    append = http.post(f"/realtime/v1/streams/{run_id}/self/out/append", content=b"x", headers=AUTH)
    assert (append.status_code, append.text) == (
        400,
        "Cannot append to a realtime stream on a completed run",
    )
    send = http.post(
        f"/realtime/v1/streams/{run_id}/input/approval", json={"data": 1}, headers=AUTH
    )
    assert send.status_code == 400
    assert send.json() == {"ok": False, "error": "Cannot send to input stream on a completed run"}
    # Reading still works: streams outlive their run.
    assert mask_timestamps(read_body(http, f"/realtime/v1/streams/{run_id}/out")) == (
        b'event: ping\ndata: {"timestamp":T,"tail":{"seq_num":0,"timestamp":0}}\n\ndata: [DONE]\n\n'
    )


def test_unknown_run_is_404_with_envelope(http):
    response = http.get("/realtime/v1/streams/run_doesnotexist/default", headers=AUTH)
    assert response.status_code == 404
    assert response.json() == {"error": "Not found"}
    assert response.headers["x-should-retry"] == "false"


def test_ten_thousand_parts_read_back_in_order(emulator, http):
    parts = [{"i": i, "text": f"token {i}"} for i in range(10_000)]
    run_id, token = emulator.trigger("echo-parts", {"parts": parts, "key": "bulk"})
    emulator.wait_for_status(run_id, "COMPLETED_SUCCESSFULLY")

    records = read_records(http, f"/realtime/v1/streams/{run_id}/bulk", 10_000, token=token)

    assert [r["seq_num"] for r in records] == list(range(10_000))
    assert [json.loads(r["body"])["data"] for r in records] == parts
