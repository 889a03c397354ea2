"""Run shapes live for every change a task makes, ``PUT /api/v1/runs/{run}/metadata``, and the
run-shape faults (``must-refetch``, ``status``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from .conftest import AUTH, SECRET, UNREGISTERED_TASK, electric

SHAPE_KEY = "$shape"


class ShapeReader:
    """Follows one run shape as the Electric client does: snapshot, then live long-polls."""

    def __init__(self, client: httpx.AsyncClient, run_id: str, token: str = SECRET) -> None:
        self.client = client
        self.path = f"/realtime/v1/runs/{run_id}"
        self.token = token
        self.handle = ""
        self.offset = "-1"
        self.cursor = ""
        self.row: dict[str, Any] = {}

    async def get(self) -> httpx.Response:
        params = {"log": "full", "offset": self.offset}
        if self.handle:
            params.update(handle=self.handle, live="true", cursor=self.cursor)
        response = await self.client.get(self.path, params=params, headers=electric(self.token))
        if response.status_code == 200:
            self.handle = response.headers["electric-handle"]
            self.offset = response.headers["electric-offset"]
            self.cursor = response.headers.get("electric-cursor", "")
            for message in response.json():
                if "value" in message:
                    self.row = {**self.row, **message["value"]}
        return response

    async def snapshot(self) -> dict[str, Any]:
        response = await self.get()
        assert response.status_code == 200
        return self.row

    def live(self) -> asyncio.Task[httpx.Response]:
        assert self.handle, "take the snapshot first"
        return asyncio.create_task(self.get())


@pytest.fixture
async def client(emulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=emulator.url, timeout=30.0) as client:
        yield client


async def parked(emulator, run_id: str, count: int = 1) -> None:
    """Wait until ``count`` live requests of the run's shape were received."""

    def seen() -> bool:
        return (
            sum(
                1
                for r in emulator.requests()
                if r["path"] == f"/realtime/v1/runs/{run_id}" and "live=true" in r["query"]
            )
            >= count
        )

    await asyncio.to_thread(emulator.wait_for, seen)


async def change_while_parked(
    emulator, reader: ShapeReader, run_id: str, change: Callable[[], Any]
) -> dict[str, Any]:
    """Park a live request, make ``change``, return the updated row it answered with."""
    live_requests = sum(
        1
        for r in emulator.requests()
        if r["path"] == f"/realtime/v1/runs/{run_id}" and "live=true" in r["query"]
    )
    pending = reader.live()
    await parked(emulator, run_id, live_requests + 1)
    result = change()
    if asyncio.iscoroutine(result):
        await result
    response = await pending
    assert response.status_code == 200, response.text
    update, up_to_date = response.json()
    assert update["headers"] == {"operation": "update"}
    assert up_to_date == {"headers": {"control": "up-to-date"}}
    return reader.row


def control(emulator, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = emulator.client.post(path, json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_every_change_a_task_makes_is_a_live_update(emulator, client):
    run_id, token = emulator.trigger(UNREGISTERED_TASK, {"q": 1})
    reader = ShapeReader(client, run_id, token)
    row = await reader.snapshot()
    assert (row["status"], row["metadata"], row["runTags"]) == ("EXECUTING", None, None)

    row = await change_while_parked(
        emulator,
        reader,
        run_id,
        lambda: control(
            emulator, f"/_emulator/runs/{run_id}/update", {"status": "WAITING_TO_RESUME"}
        ),
    )
    assert row["status"] == "WAITING_TO_RESUME"

    row = await change_while_parked(
        emulator,
        reader,
        run_id,
        lambda: client.put(
            f"/api/v1/runs/{run_id}/metadata",
            json={"operations": [{"type": "set", "key": "progress", "value": 0.4}]},
            headers=AUTH,
        ),
    )
    assert json.loads(row["metadata"]) == {"progress": 0.4}
    assert row["metadataType"] == "application/json"

    row = await change_while_parked(
        emulator,
        reader,
        run_id,
        lambda: control(emulator, f"/_emulator/runs/{run_id}/update", {"tags": ["user:7"]}),
    )
    assert row["runTags"] == '{"user:7"}'

    row = await change_while_parked(
        emulator,
        reader,
        run_id,
        lambda: client.put(f"/realtime/v1/streams/{run_id}/self/answer", headers=AUTH),
    )
    assert row["realtimeStreams"] == '{"answer"}'

    row = await change_while_parked(
        emulator, reader, run_id, lambda: emulator.complete_run(run_id, output={"ok": 1})
    )
    assert row["status"] == "COMPLETED_SUCCESSFULLY"
    assert row["completedAt"] is not None
    assert json.loads(row["output"]) == {"ok": 1}


async def test_a_failed_run_is_a_live_update_with_its_error(emulator, client):
    run_id, token = emulator.trigger(UNREGISTERED_TASK, {})
    reader = ShapeReader(client, run_id, token)
    await reader.snapshot()
    row = await change_while_parked(
        emulator,
        reader,
        run_id,
        lambda: control(emulator, f"/_emulator/runs/{run_id}/fail", {"error": "it broke"}),
    )
    assert row["status"] == "COMPLETED_WITH_ERRORS"
    assert json.loads(row["error"]) == {"type": "STRING_ERROR", "raw": "it broke"}
    assert row["output"] is None


async def test_a_simulated_task_waiting_for_input_is_waiting(emulator, client):
    run_id, token = emulator.trigger(
        "demo-ai-writer", {"prompt": "status", "tokens_per_second": 100_000}
    )
    await asyncio.to_thread(
        emulator.wait_for, lambda: emulator.run(run_id)["status"] == "WAITING_TO_RESUME"
    )
    reader = ShapeReader(client, run_id, token)
    assert (await reader.snapshot())["status"] == "WAITING_TO_RESUME"

    await client.post(
        f"/realtime/v1/streams/{run_id}/input/approval",
        json={"data": {"approved": True, "reviewer": "Ada"}},
        headers=electric(token),
    )
    run = await asyncio.to_thread(emulator.wait_for_status, run_id, "COMPLETED_SUCCESSFULLY")
    assert run["output"] == {"approved": True, "reviewer": "Ada"}


async def test_must_refetch_answers_a_parked_request_with_409_and_a_new_handle(emulator, client):
    run_id, token = emulator.trigger(UNREGISTERED_TASK, {})
    reader = ShapeReader(client, run_id, token)
    await reader.snapshot()
    old_handle = reader.handle
    pending = reader.live()
    await parked(emulator, run_id)

    emulator.inject_fault(run_id, SHAPE_KEY, "must-refetch")
    response = await pending

    assert response.status_code == 409
    assert response.json() == [{"headers": {"control": "must-refetch"}}]
    new_handle = response.headers["electric-handle"]
    assert new_handle != old_handle
    assert emulator.run(run_id)["shapeHandle"] == new_handle

    # The old handle is gone: a live request with it is told to refetch again.
    stale = await client.get(
        f"/realtime/v1/runs/{run_id}",
        params={"live": "true", "handle": old_handle, "offset": reader.offset},
        headers=electric(token),
    )
    assert (stale.status_code, stale.headers["electric-handle"]) == (409, new_handle)

    # Refetching from offset -1 with the new handle is a snapshot under that handle.
    refetch = await client.get(
        f"/realtime/v1/runs/{run_id}",
        params={"offset": "-1", "handle": new_handle, "expired_handle": old_handle},
        headers=electric(token),
    )
    assert refetch.status_code == 200
    assert refetch.headers["electric-handle"] == new_handle
    assert "electric-schema" in refetch.headers
    assert refetch.json()[0]["headers"] == {"operation": "insert"}


async def test_shape_faults_apply_to_the_next_request(emulator, client):
    run_id, token = emulator.trigger(UNREGISTERED_TASK, {})
    path = f"/realtime/v1/runs/{run_id}"
    emulator.inject_fault(run_id, SHAPE_KEY, "status", status=503, times=2)
    for _ in range(2):
        failed = await client.get(path, headers=electric(token))
        assert (failed.status_code, failed.json()) == (503, {"error": "Injected fault: status 503"})
    assert (await client.get(path, headers=electric(token))).status_code == 200

    emulator.inject_fault(run_id, SHAPE_KEY, "must-refetch")
    assert (await client.get(path, headers=electric(token))).status_code == 409


def test_shape_fault_kinds_are_checked(emulator):
    run_id, _ = emulator.trigger(UNREGISTERED_TASK, {})
    for key, kind, message in [
        (SHAPE_KEY, "drop", "does not apply to a run shape"),
        ("default", "must-refetch", "applies to key '$shape' only"),
    ]:
        response = emulator.client.post(
            "/_emulator/faults", json={"run_id": run_id, "key": key, "kind": kind}
        )
        assert response.status_code == 400
        assert message in response.json()["error"]


def test_metadata_operations_as_the_sdk_flushes_them(emulator, http):
    run_id, _ = emulator.trigger(UNREGISTERED_TASK, {})
    path = f"/api/v1/runs/{run_id}/metadata"

    def put(body: dict[str, Any]) -> httpx.Response:
        return http.put(path, json=body, headers=AUTH)

    first = put(
        {
            "operations": [
                {"type": "set", "key": "progress", "value": 0.1},
                {"type": "set", "key": "step", "value": "Searching"},
                {"type": "append", "key": "log", "value": "started"},
                {"type": "increment", "key": "count", "value": 2},
                {"type": "set", "key": "$.nested.deep", "value": [1]},
            ],
            "parentOperations": [],
            "rootOperations": [],
        }
    )
    assert first.status_code == 200
    assert first.json() == {
        "metadata": {
            "progress": 0.1,
            "step": "Searching",
            "log": ["started"],
            "count": 2,
            "nested": {"deep": [1]},
        }
    }
    second = put(
        {
            "operations": [
                {"type": "append", "key": "log", "value": "more"},
                {"type": "remove", "key": "log", "value": "started"},
                {"type": "increment", "key": "count", "value": -0.5},
                {"type": "delete", "key": "step"},
                {"type": "append", "key": "$.nested.deep", "value": 2},
            ]
        }
    )
    assert second.json()["metadata"] == {
        "progress": 0.1,
        "log": ["more"],
        "count": 1.5,
        "nested": {"deep": [1, 2]},
    }
    revision = emulator.run(run_id)["revision"]
    # No operation applied: no change, no shape update.
    assert put({"operations": []}).json()["metadata"] == second.json()["metadata"]
    assert emulator.run(run_id)["revision"] == revision
    # A metadata object replaces the whole metadata.
    replaced = put({"metadata": {"progress": 1}})
    assert replaced.json() == {"metadata": {"progress": 1}}
    assert emulator.run(run_id)["metadata"] == {"progress": 1}
    # "update" replaces too.
    updated = put({"operations": [{"type": "update", "value": {"step": "Done"}}]})
    assert updated.json() == {"metadata": {"step": "Done"}}


def test_metadata_errors(emulator, http):
    run_id, token = emulator.trigger(UNREGISTERED_TASK, {})
    path = f"/api/v1/runs/{run_id}/metadata"
    body = {"operations": [{"type": "set", "key": "a", "value": 1}]}

    missing = http.put("/api/v1/runs/run_missing/metadata", json=body, headers=AUTH)
    assert (missing.status_code, missing.json()) == (404, {"error": "Task Run not found"})
    # No JWTs on this route: a public token is an unknown API key.
    assert http.put(path, json=body, headers=electric(token)).status_code == 401
    for bad, message in [
        ({"operations": "set"}, "operations must be an array"),
        ({"operations": [{"type": "rename", "key": "a"}]}, "operations[0] must be an object"),
        ({"operations": [{"type": "increment", "key": "a", "value": "1"}]}, "must be a number"),
        ({"metadata": [1]}, "metadata must be an object"),
        ([1], "expected an object"),
    ]:
        response = http.put(path, json=bad, headers=AUTH)
        assert response.status_code == 400, bad
        assert message in response.json()["error"], response.json()
    assert emulator.run(run_id)["metadata"] == {}
    # Within the hour after completion the server still takes metadata.
    emulator.complete_run(run_id)
    late = http.put(path, json=body, headers=AUTH)
    assert (late.status_code, late.json()) == (200, {"metadata": {"a": 1}})


def test_control_update_refuses_final_statuses(emulator):
    run_id, _ = emulator.trigger(UNREGISTERED_TASK, {})
    response = emulator.client.post(
        f"/_emulator/runs/{run_id}/update", json={"status": "COMPLETED_SUCCESSFULLY"}
    )
    assert response.status_code == 400
    assert "finish a run with complete or fail" in response.json()["error"]
    assert emulator.run(run_id)["status"] == "EXECUTING"
