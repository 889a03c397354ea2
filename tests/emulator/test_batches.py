"""v2 reads batched as S2 sends them: at most 1,000 records and 1 MiB of metered bytes per
``batch`` event, exact ``id:`` counters, and ``tail`` once the read has reached the live edge."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest

from trigger_django.client import TriggerClient

from .conftest import AUTH, SECRET, UNREGISTERED_TASK, mask_timestamps, read_body

MIB = 1024 * 1024
BIG_PART_COUNT = 600
BIG_PART_SIZE = 100 * 1024


def big_part(index: int) -> str:
    """A distinct 100 KB ASCII part (no characters JSON would escape)."""
    head = f"part {index:04d} "
    return head + chr(ord("a") + index % 26) * (BIG_PART_SIZE - len(head))


def envelope_ndjson(parts: list[str]) -> Iterator[bytes]:
    for part in parts:
        yield (json.dumps(part) + "\n").encode()


def sse_events(body: bytes) -> list[dict[str, str]]:
    """The SSE events of a whole body, as {field: value} (each field once here)."""
    events = []
    for block in body.decode().split("\n\n"):
        if not block:
            continue
        event: dict[str, str] = {"_size": str(len(block.encode()) + 2)}
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            event[name] = value
        events.append(event)
    return events


def batches(body: bytes) -> list[dict[str, str]]:
    return [event for event in sse_events(body) if event.get("event") == "batch"]


def check_ids(events: list[dict[str, str]]) -> None:
    """``id: <last seq>,<records so far>,<metered bytes so far>``, exactly."""
    count = 0
    metered = 0
    for event in events:
        records = json.loads(event["data"])["records"]
        count += len(records)
        metered += sum(8 + len(record["body"].encode()) for record in records)
        assert event["id"] == f"{records[-1]['seq_num']},{count},{metered}"


@pytest.fixture(scope="module")
def big_stream(emulator) -> str:
    """A v2 stream holding 600 parts of 100 KB, written through the chunked ingest."""
    run_id, _ = emulator.trigger(UNREGISTERED_TASK, {}, stream_version="v2")
    parts = [big_part(index) for index in range(BIG_PART_COUNT)]
    with httpx.Client(base_url=emulator.url, timeout=60.0) as client:
        response = client.post(
            f"/realtime/v1/streams/{run_id}/self/big", content=envelope_ndjson(parts), headers=AUTH
        )
    assert response.status_code == 200, response.text
    assert emulator.run(run_id)["streams"]["big"] == BIG_PART_COUNT
    return run_id


def test_written_stream_reads_back_in_batches_of_at_most_one_mib(emulator, big_stream):
    with httpx.Client(base_url=emulator.url, timeout=60.0) as client:
        body = read_body(client, f"/realtime/v1/streams/{big_stream}/big")

    events = batches(body)
    sizes = []
    parts = []
    for event in events:
        records = json.loads(event["data"])["records"]
        sizes.append(sum(8 + len(record["body"].encode()) for record in records))
        parts += [json.loads(record["body"])["data"] for record in records]
        # Written before the read began: catch-up batches carry no tail.
        assert "tail" not in json.loads(event["data"])
    assert parts == [big_part(index) for index in range(BIG_PART_COUNT)]
    assert max(sizes) <= MIB
    # Each batch is as full as 1 MiB allows: the next record would not have fitted.
    record_size = sizes[0] // 10
    assert all(size + record_size > MIB for size in sizes[:-1])
    assert len(events) == 60
    assert max(int(event["_size"]) for event in events) < 1_100_000
    check_ids(events)


async def test_trigger_client_reads_the_big_stream_identically(emulator, big_stream):
    async with TriggerClient(emulator.url, secret_key=SECRET) as client:
        parts = [part async for part in client.read_stream(big_stream, "big", timeout_seconds=1)]
    assert [part.chunk for part in parts] == [big_part(index) for index in range(BIG_PART_COUNT)]
    assert [part.id for part in parts] == [str(index) for index in range(BIG_PART_COUNT)]


def test_tiny_parts_come_in_batches_of_1000(emulator, http):
    run_id, _ = emulator.trigger("echo-parts", {"parts": list(range(2500))})
    emulator.wait_for_status(run_id, "COMPLETED_SUCCESSFULLY")

    events = batches(read_body(http, f"/realtime/v1/streams/{run_id}/default"))

    assert [len(json.loads(event["data"])["records"]) for event in events] == [1000, 1000, 500]
    assert [event["id"].split(",")[:2] for event in events] == [
        ["999", "1000"],
        ["1999", "2000"],
        ["2499", "2500"],
    ]
    check_ids(events)


def test_a_resumed_read_counts_from_its_own_start(emulator, http):
    run_id, _ = emulator.trigger("echo-parts", {"parts": list(range(1500))})
    emulator.wait_for_status(run_id, "COMPLETED_SUCCESSFULLY")

    events = batches(read_body(http, f"/realtime/v1/streams/{run_id}/default", Last_Event_ID="199"))

    # The counters are of this read session, as S2 keeps them.
    assert [event["id"].split(",")[:2] for event in events] == [["1199", "1000"], ["1499", "1300"]]
    check_ids(events)


def test_tail_is_sent_once_the_read_reaches_the_live_edge(emulator):
    run_id, _ = emulator.trigger(UNREGISTERED_TASK, {}, stream_version="v2")
    append = f"/realtime/v1/streams/{run_id}/self/out/append"
    with httpx.Client(base_url=emulator.url, timeout=10.0) as client:
        for text in ("zero", "one"):
            assert client.post(append, content=text.encode(), headers=AUTH).status_code == 200
        seen: list[dict[str, str]] = []
        headers = {**AUTH, "Timeout-Seconds": "1"}
        with client.stream("GET", f"/realtime/v1/streams/{run_id}/out", headers=headers) as reply:
            buffer = b""
            for chunk in reply.iter_bytes():
                buffer += chunk
                seen = sse_events(buffer[: buffer.rfind(b"\n\n") + 2])
                if any(event.get("event") == "ping" for event in seen) and len(seen) == 2:
                    # Caught up: now write while the read is following the stream.
                    assert client.post(append, content=b"two", headers=AUTH).status_code == 200
            seen = sse_events(buffer)

    catch_up, caught_up, live, done = seen
    assert catch_up["event"] == "batch"
    catch_up_data = json.loads(catch_up["data"])
    assert [r["seq_num"] for r in catch_up_data["records"]] == [0, 1]
    assert "tail" not in catch_up_data
    # The heartbeat on entering follow mode names the tail: the next seq_num and the
    # timestamp of the last record.
    assert caught_up["event"] == "ping"
    ping = json.loads(caught_up["data"])
    assert ping["tail"] == {"seq_num": 2, "timestamp": catch_up_data["records"][1]["timestamp"]}
    assert isinstance(ping["timestamp"], int)
    assert live["event"] == "batch"
    live_data = json.loads(live["data"])
    (record,) = live_data["records"]
    assert record["seq_num"] == 2
    assert json.loads(record["body"])["data"] == "two"
    assert live_data["tail"] == {"seq_num": 3, "timestamp": record["timestamp"]}
    assert live["id"].split(",")[:2] == ["2", "3"]
    assert done == {"_size": str(len("data: [DONE]\n\n")), "data": "[DONE]"}


def test_a_read_of_an_empty_stream_starts_with_the_tail(emulator, http):
    run_id, _ = emulator.trigger(UNREGISTERED_TASK, {}, stream_version="v2")
    body = read_body(http, f"/realtime/v1/streams/{run_id}/empty")
    assert mask_timestamps(body) == (
        b'event: ping\ndata: {"timestamp":T,"tail":{"seq_num":0,"timestamp":0}}\n\ndata: [DONE]\n\n'
    )


def test_an_append_over_one_mib_metered_is_refused_as_the_server_does(emulator, http):
    run_id, _ = emulator.trigger(UNREGISTERED_TASK, {}, stream_version="v2")
    # Under the 512 KiB body limit, but every U+0001 is six bytes once JSON-escaped.
    part = "\x01" * 200_000
    metered = 8 + len(json.dumps({"data": part, "id": "abcdefg"}, separators=(",", ":")))
    response = http.post(
        f"/realtime/v1/streams/{run_id}/self/out/append",
        content=part.encode(),
        headers={**AUTH, "X-Part-Id": "abcdefg"},
    )
    assert response.status_code == 413
    assert response.json() == {
        "ok": False,
        "error": f"Record metered size {metered} bytes exceeds the S2 per-record limit of "
        "1048576 bytes. Reduce tool-output size or split into smaller parts.",
    }
    assert emulator.run(run_id)["streams"].get("out", 0) == 0


def test_a_record_of_exactly_one_mib_metered_is_stored_and_goes_alone(emulator, http):
    run_id, _ = emulator.trigger(UNREGISTERED_TASK, {}, stream_version="v2")
    envelope_overhead = 8 + len('{"data":"","id":"abcdefg"}')
    stream = f"/realtime/v1/streams/{run_id}/self/out"
    exact = "x" * (MIB - envelope_overhead)
    # The append route stops at 512 KiB, so the 1 MiB record comes through the ingest.
    lines = [json.dumps("small"), json.dumps(exact), json.dumps("after")]
    response = http.post(stream, content=("\n".join(lines) + "\n").encode(), headers=AUTH)
    assert response.status_code == 200, response.text

    events = batches(read_body(http, f"/realtime/v1/streams/{run_id}/out"))
    counts = [len(json.loads(event["data"])["records"]) for event in events]
    assert counts == [1, 1, 1]
    totals = [int(event["id"].split(",")[2]) for event in events]
    assert totals[1] - totals[0] == MIB


def test_an_ingest_line_over_one_mib_ends_the_post_with_422(emulator, http):
    run_id, _ = emulator.trigger(UNREGISTERED_TASK, {}, stream_version="v2")
    stream = f"/realtime/v1/streams/{run_id}/self/out"
    body = json.dumps("before") + "\n" + json.dumps("y" * MIB) + "\n" + json.dumps("after") + "\n"
    response = http.post(stream, content=body.encode(), headers=AUTH)
    assert response.status_code == 422
    assert response.json() == {
        "ok": False,
        "error": "record must have metered size less than 1 MiB",
    }
    # The lines before it are kept; nothing after it is read.
    assert emulator.run(run_id)["streams"]["out"] == 1


def test_an_input_over_one_mib_metered_is_refused(emulator, http):
    run_id, _ = emulator.trigger(UNREGISTERED_TASK, {}, stream_version="v2")
    # Under the route's 1 MiB body limit; JSON.stringify twice makes it far bigger.
    data = '"' * 400_000
    response = http.post(
        f"/realtime/v1/streams/{run_id}/input/approval", json={"data": data}, headers=AUTH
    )
    assert response.status_code == 413
    assert response.json()["ok"] is False
    assert "exceeds the S2 per-record limit of 1048576 bytes" in response.json()["error"]
    assert emulator.run(run_id)["inputs"] == []


async def test_batches_stay_within_the_caps_while_following(emulator):
    run_id, _ = emulator.trigger(UNREGISTERED_TASK, {}, stream_version="v2")
    stream = f"/realtime/v1/streams/{run_id}/self/out"
    lines = b"".join(envelope_ndjson([big_part(index) for index in range(25)]))
    async with httpx.AsyncClient(base_url=emulator.url, timeout=30.0) as client:
        headers = {**AUTH, "Timeout-Seconds": "1"}
        async with client.stream(
            "GET", f"/realtime/v1/streams/{run_id}/out", headers=headers
        ) as reply:
            body = b""
            writer: asyncio.Task[httpx.Response] | None = None
            async for chunk in reply.aiter_bytes():
                body += chunk
                if writer is None and b"event: ping" in body:
                    # 25 parts of 100 KB written while the read follows the stream.
                    writer = asyncio.create_task(client.post(stream, content=lines, headers=AUTH))
    assert writer is not None
    assert (await writer).status_code == 200
    events = batches(body)
    records = [json.loads(event["data"]) for event in events]
    assert sum(len(data["records"]) for data in records) == 25
    assert all("tail" in data for data in records)
    assert len(events) >= 3
    for data in records:
        assert data["tail"]["seq_num"] == data["records"][-1]["seq_num"] + 1
        assert sum(8 + len(r["body"].encode()) for r in data["records"]) <= MIB
    check_ids(events)
