"""Fault injection, observed by a raw httpx reader."""

from __future__ import annotations

import json

import httpx
import pytest

from .conftest import AUTH, mask_timestamps, read_body, read_records


@pytest.fixture
def five_parts(emulator):
    run_id, _ = emulator.trigger("echo-parts", {"parts": ["a", "b", "c", "d", "e"]})
    emulator.wait_for_status(run_id, "COMPLETED_SUCCESSFULLY")
    return run_id


def _seqs(text: str) -> list[int]:
    seqs = []
    for line in text.splitlines():
        if line.startswith('data: {"records"'):
            seqs += [r["seq_num"] for r in json.loads(line.removeprefix("data: "))["records"]]
    return seqs


def _read_into(http, path: str, received: bytearray) -> None:
    with http.stream("GET", path, headers={**AUTH, "Timeout-Seconds": "5"}) as response:
        assert response.status_code == 200
        for chunk in response.iter_bytes():
            received += chunk


def test_drop_closes_the_connection_mid_body(emulator, http, five_parts):
    emulator.inject_fault(five_parts, "default", "drop", after=2)
    path = f"/realtime/v1/streams/{five_parts}/default"
    received = bytearray()

    with pytest.raises(httpx.RemoteProtocolError):
        _read_into(http, path, received)

    assert _seqs(received.decode()) == [0, 1]
    assert b"[DONE]" not in received
    # One read only (times=1): the resumed read is clean and exclusive of the last seq.
    resumed = read_records(http, path, 3, **{"Last-Event-ID": "1"})
    assert [r["seq_num"] for r in resumed] == [2, 3, 4]


def test_drop_applies_to_the_next_n_reads(emulator, http, five_parts):
    emulator.inject_fault(five_parts, "default", "drop", after=0, times=2)
    path = f"/realtime/v1/streams/{five_parts}/default"
    for _ in range(2):
        with (
            pytest.raises(httpx.RemoteProtocolError),
            http.stream("GET", path, headers=AUTH) as response,
        ):
            response.read()
    assert [r["seq_num"] for r in read_records(http, path, 5)] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("status", [503, 429])
def test_status_fault_answers_with_a_json_error(emulator, http, five_parts, status):
    emulator.inject_fault(five_parts, "default", "status", status=status)
    path = f"/realtime/v1/streams/{five_parts}/default"

    failed = http.get(path, headers=AUTH)

    assert failed.status_code == status
    assert failed.json() == {"error": f"Injected fault: status {status}"}
    assert [r["seq_num"] for r in read_records(http, path, 5)] == [0, 1, 2, 3, 4]


def test_stall_sends_headers_then_nothing(emulator, five_parts):
    emulator.inject_fault(five_parts, "default", "stall", seconds=30)
    timeout = httpx.Timeout(10.0, read=0.5)
    with (
        httpx.Client(base_url=emulator.url, timeout=timeout) as client,
        client.stream(
            "GET", f"/realtime/v1/streams/{five_parts}/default", headers=AUTH
        ) as response,
    ):
        assert response.status_code == 200
        with pytest.raises(httpx.ReadTimeout):
            next(response.iter_bytes())


def test_stall_then_delivers(emulator, http, five_parts):
    emulator.inject_fault(five_parts, "default", "stall", seconds=0.2)
    records = read_records(http, f"/realtime/v1/streams/{five_parts}/default", 5)
    assert [r["seq_num"] for r in records] == [0, 1, 2, 3, 4]


def test_malformed_frames_precede_the_real_data(emulator, http, five_parts):
    emulator.inject_fault(five_parts, "default", "malformed")

    body = read_body(http, f"/realtime/v1/streams/{five_parts}/default").decode()

    events = body.split("\n\n")
    assert events[0] == "this line is not an SSE field\n{{{garbage}}}"
    assert events[1] == 'event: batch\nid: 0,0,0\ndata: {"records":[{"seq_num":'
    bad_record = json.loads(events[2].split("data: ", 1)[1])["records"][0]
    assert bad_record["body"] == "not json at all"
    assert _seqs("\n\n".join(events[3:])) == [0, 1, 2, 3, 4]


def test_malformed_variant_and_input_stream_keys(emulator, http, five_parts):
    emulator.inject_fault(five_parts, "$trigger.input:approval", "malformed", variant="garbage")
    body = read_body(http, f"/realtime/v1/streams/{five_parts}/input/approval")
    assert mask_timestamps(body) == (
        b"this line is not an SSE field\n{{{garbage}}}\n\n"
        b'event: ping\ndata: {"timestamp":T,"tail":{"seq_num":0,"timestamp":0}}\n\n'
        b"data: [DONE]\n\n"
    )


def test_fault_requests_are_validated(emulator, http, five_parts):
    for bad, message in [
        ({"kind": "explode"}, "Unknown fault kind"),
        ({"kind": "status", "status": 404}, "status must be 429 or 5xx"),
        ({"kind": "drop", "times": 0}, "times must be at least 1"),
        ({"kind": "drop", "bogus": 1}, "bogus"),
    ]:
        response = http.post(
            "/_emulator/faults", json={"run_id": five_parts, "key": "default", **bad}, headers=AUTH
        )
        assert response.status_code == 400
        assert message in response.json()["error"]
    missing = http.post("/_emulator/faults", json={"kind": "drop"}, headers=AUTH)
    assert missing.json() == {"error": "Missing field 'run_id'."}
