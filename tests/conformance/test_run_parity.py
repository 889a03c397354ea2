"""Parity of ``TriggerClient.subscribe_run`` with the official SDK's ``ApiClient.subscribeToRun``.

Both follow the same emulator run at the same time (the SDK in Node through ``run_lines.mjs``,
which prints each run object as it arrives). The test changes the run one step at a time, and
only when both clients hold a live request parked at the emulator, so each change reaches both
as exactly one update; then it compares the next run object of each, field by field. The steps
go through status changes (every open status and its mapping), metadata updates through the
SDK's metadata endpoint, tags, a stream created mid-run, a 409 must-refetch (a shape fault
answered to both clients), and completion or failure.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import httpx
import pytest

from trigger_django.client import Run, TriggerClient

from .conftest import CONFORMANCE_DIR, SDK_ENVIRONMENT_PREFIXES, NodeSdk

OPEN_TASK = "conformance-open"  # no simulated task: the run changes only through the steps
STEP_TIMEOUT = 45.0

# -- the SDK's run object, from ours -----------------------------------------------------------

# Python field -> the SDK's field name, in the SDK object's order (transformRunShape).
FIELDS = {
    "id": "id",
    "created_at": "createdAt",
    "updated_at": "updatedAt",
    "task_identifier": "taskIdentifier",
    "status": "status",
    "payload": "payload",
    "output": "output",
    "duration_ms": "durationMs",
    "cost_in_cents": "costInCents",
    "base_cost_in_cents": "baseCostInCents",
    "tags": "tags",
    "idempotency_key": "idempotencyKey",
    "expired_at": "expiredAt",
    "finished_at": "finishedAt",
    "started_at": "startedAt",
    "delayed_until": "delayedUntil",
    "queued_at": "queuedAt",
    "error": "error",
    "is_test": "isTest",
    "metadata": "metadata",
    "realtime_streams": "realtimeStreams",
    "is_queued": "isQueued",
    "is_waiting": "isWaiting",
    "is_executing": "isExecuting",
    "is_completed": "isCompleted",
    "is_failed": "isFailed",
    "is_success": "isSuccess",
    "is_cancelled": "isCancelled",
}


def _js(value: Any) -> Any:
    """A Python value as ``JSON.parse(JSON.stringify(value))`` gives it on the Node side."""
    if isinstance(value, datetime):
        micro = value.microsecond
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{micro // 1000:03d}Z"
    if isinstance(value, tuple | list):
        return [_js(item) for item in value]
    if isinstance(value, dict):
        return {key: _js(item) for key, item in value.items()}
    return value


def sdk_json(run: Run) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, sdk_name in FIELDS.items():
        value = getattr(run, name)
        if name == "error" and value is not None:
            error = {
                "name": value.name,
                "message": value.message,
                "stackTrace": value.stack_trace,
                "causes": value.causes,
            }
            value = {key: item for key, item in error.items() if item is not None}
        if value is None:
            continue  # undefined in the SDK object: dropped by JSON.stringify
        out[sdk_name] = _js(value)
    return out


def test_the_field_table_covers_every_run_field() -> None:
    assert set(FIELDS) == set(Run.__dataclass_fields__)


# -- the two followers -------------------------------------------------------------------------


class NodeFollower:
    """``run_lines.mjs`` in a child process; ``next()`` gives its next line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def next(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        async with asyncio.timeout(STEP_TIMEOUT):
            line = await self.process.stdout.readline()
        if not line:
            stderr = await self.process.stderr.read() if self.process.stderr else b""
            raise AssertionError(f"run_lines.mjs ended early: {stderr.decode()[-2000:]}")
        document: dict[str, Any] = json.loads(line)
        return document


@asynccontextmanager
async def node_follower(
    node_sdk: NodeSdk, emulator: Any, payload: dict[str, Any]
) -> AsyncIterator[NodeFollower]:
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(SDK_ENVIRONMENT_PREFIXES)
    }
    environment.update(
        TRIGGER_API_URL=emulator.url,
        TRIGGER_SECRET_KEY=emulator.secret_key,
        NODE_NO_WARNINGS="1",
    )
    process = await asyncio.create_subprocess_exec(
        node_sdk.node,
        str(CONFORMANCE_DIR / "run_lines.mjs"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=CONFORMANCE_DIR,
        env=environment,
    )
    assert process.stdin is not None
    process.stdin.write(json.dumps(payload).encode())
    process.stdin.close()
    try:
        yield NodeFollower(process)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


class PythonFollower:
    def __init__(self, client: TriggerClient, run_id: str, skip_columns: tuple[str, ...]) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.runs: list[Run] = []
        self.task = asyncio.create_task(self._follow(client, run_id, skip_columns))

    async def _follow(
        self, client: TriggerClient, run_id: str, skip_columns: tuple[str, ...]
    ) -> None:
        try:
            async with client.subscribe_run(run_id, skip_columns=skip_columns) as runs:
                async for run in runs:
                    self.runs.append(run)
                    await self.queue.put({"run": sdk_json(run)})
            await self.queue.put({"end": True})
        except Exception as exc:
            await self.queue.put({"error": repr(exc)})

    async def next(self) -> dict[str, Any]:
        async with asyncio.timeout(STEP_TIMEOUT):
            return await self.queue.get()


# -- driving the run ---------------------------------------------------------------------------


def _shape_requests(emulator: Any, run_id: str) -> list[dict[str, Any]]:
    path = f"/realtime/v1/runs/{run_id}"
    return [r for r in emulator.requests() if r["path"] == path]


def _is_python(request: dict[str, Any]) -> bool:
    # The Python client reads with the secret key, the SDK with the run's public token.
    return bool(request["auth"] == "secret")


async def both_parked(emulator: Any, run_id: str) -> None:
    """Wait until each client has a live request parked at the emulator (no answer yet)."""

    def parked() -> bool:
        waiting = [
            r
            for r in _shape_requests(emulator, run_id)
            if r["status"] is None and "live=true" in r["query"]
        ]
        return {_is_python(r) for r in waiting} == {True, False}

    # The emulator is another process: poll its request log (in a thread, off this loop).
    await asyncio.to_thread(emulator.wait_for, parked, STEP_TIMEOUT)


def perform(emulator: Any, run_id: str, step: dict[str, Any]) -> None:
    auth = {"Authorization": f"Bearer {emulator.secret_key}"}
    with httpx.Client(base_url=emulator.url, headers=auth, timeout=30) as http:
        if "update" in step:
            response = http.post(f"/_emulator/runs/{run_id}/update", json=step["update"])
        elif "metadata" in step:
            # What the SDK's metadata.set/replace flush sends (ApiClient.updateRunMetadata).
            response = http.put(f"/api/v1/runs/{run_id}/metadata", json=step["metadata"])
        elif "stream" in step:
            response = http.put(f"/realtime/v1/streams/{run_id}/self/{step['stream']}")
        elif "fault" in step:
            # Twice: each client's parked request answers one 409.
            response = http.post(
                "/_emulator/faults",
                json={"run_id": run_id, "key": "$shape", "kind": step["fault"], "times": 2},
            )
        elif "complete" in step:
            response = http.post(
                f"/_emulator/runs/{run_id}/complete", json={"output": step["complete"]}
            )
        elif "fail" in step:
            response = http.post(f"/_emulator/runs/{run_id}/fail", json={"error": step["fail"]})
        else:
            raise AssertionError(f"unknown step {step}")
    assert response.is_success, (step, response.status_code, response.text)


def assert_same(sdk: dict[str, Any], ours: dict[str, Any], where: str) -> None:
    assert set(ours) == set(sdk), f"{where}: fields differ: {set(ours) ^ set(sdk)}"
    for name in sdk:
        assert ours[name] == sdk[name], f"{where}: {name}: ours {ours[name]!r}, SDK {sdk[name]!r}"


async def follow_in_lockstep(
    node_sdk: NodeSdk,
    emulator: Any,
    run_id: str,
    token: str,
    steps: list[dict[str, Any]],
    *,
    skip_columns: tuple[str, ...],
) -> list[dict[str, Any]]:
    """Run ``steps`` against ``run_id``; return the run objects both clients saw (compared).

    ``token`` (the run's public token) is the SDK's credential; ours is the secret key."""
    payload: dict[str, Any] = {"runId": run_id, "token": token}
    if skip_columns:
        payload["skipColumns"] = list(skip_columns)
    compared: list[dict[str, Any]] = []
    async with (
        TriggerClient(emulator.url, secret_key=emulator.secret_key) as client,
        node_follower(node_sdk, emulator, payload) as node,
    ):
        ours = PythonFollower(client, run_id, skip_columns)
        try:

            async def compare_next(where: str) -> bool:
                sdk_item, our_item = await asyncio.gather(node.next(), ours.next())
                assert "error" not in sdk_item, f"{where}: the SDK failed: {sdk_item}"
                assert "error" not in our_item, f"{where}: subscribe_run failed: {our_item}"
                assert sdk_item.keys() == our_item.keys(), (where, sdk_item, our_item)
                if "end" in sdk_item:
                    return False
                assert_same(sdk_item["run"], our_item["run"], where)
                compared.append(sdk_item["run"])
                return True

            assert await compare_next("snapshot")
            for number, step in enumerate(steps, 1):
                await both_parked(emulator, run_id)
                await asyncio.to_thread(perform, emulator, run_id, step)
                where = f"after step {number} {step}"
                assert await compare_next(where)
                if "fault" in step:
                    # The 409, then the refetched snapshot: the same run once more for both.
                    assert compared[-1] == compared[-2]
                if "complete" in step or "fail" in step:
                    # Both end after the first object with finishedAt.
                    assert not await compare_next(f"end after step {number}")
            await ours.task
        finally:
            ours.task.cancel()
    return compared


# -- the scenarios -----------------------------------------------------------------------------


async def test_subscribe_run_matches_the_sdk_through_changes_a_409_and_completion(
    node_sdk: NodeSdk, emulator: Any
) -> None:
    run_id, token = emulator.trigger(OPEN_TASK, {"prompt": "parity", "n": 1}, tags=["user:1"])
    steps: list[dict[str, Any]] = [
        {"update": {"status": "PENDING"}},
        {"update": {"status": "DEQUEUED"}},
        {"update": {"status": "EXECUTING"}},
        {"update": {"status": "WAITING_TO_RESUME"}},
        {"metadata": {"operations": [{"type": "set", "key": "progress", "value": 0.4}]}},
        {"metadata": {"operations": [{"type": "set", "key": "step", "value": "Searching"}]}},
        {"fault": "must-refetch"},
        {"update": {"status": "RETRYING_AFTER_FAILURE", "tags": ["user:7", 'a "quoted" tag']}},
        {"stream": "answer"},
        {"update": {"status": "PAUSED"}},
        {"update": {"status": "DELAYED"}},
        {"update": {"status": "PENDING_VERSION"}},
        {"update": {"status": "WAITING_FOR_DEPLOY"}},
        {"stream": "tools"},
        {"metadata": {"metadata": {"progress": 1, "step": "Done", "nested": {"é": [1, None]}}}},
        {"update": {"status": "EXECUTING"}},
        {"complete": {"answer": 42, "text": "h\u00e9llo \U0001f600", "list": [1, 2.5, None]}},
    ]
    compared = await follow_in_lockstep(
        node_sdk, emulator, run_id, token, steps, skip_columns=("payload",)
    )
    assert len(compared) == len(steps) + 1
    statuses = [run["status"] for run in compared]
    assert statuses[:5] == ["EXECUTING", "QUEUED", "DEQUEUED", "EXECUTING", "WAITING"]
    assert {"PENDING_VERSION", "DELAYED"} <= set(statuses)
    assert compared[-1]["status"] == "COMPLETED"
    assert compared[-1]["output"]["answer"] == 42
    assert compared[-1]["realtimeStreams"] == ["answer", "tools"]
    assert all("payload" not in run for run in compared)
    # One 409 for each client, then a refetch from offset -1 naming the expired handle.
    requests = _shape_requests(emulator, run_id)
    for python in (True, False):
        mine = [r for r in requests if _is_python(r) == python]
        statuses_seen = [r["status"] for r in mine]
        assert statuses_seen.count(409) == 1, statuses_seen
        after = mine[statuses_seen.index(409) + 1]["query"]
        assert "offset=-1" in after
        assert "expired_handle=" in after
    PARITY_CORPUS.append(len(compared))


async def test_subscribe_run_matches_the_sdk_on_a_failed_run_with_its_payload(
    node_sdk: NodeSdk, emulator: Any
) -> None:
    run_id, token = emulator.trigger(
        OPEN_TASK, {"city": "Z\u00fcrich", "deep": {"list": [1, {"x": None}]}}
    )
    steps: list[dict[str, Any]] = [
        {"metadata": {"metadata": {"progress": 0.1}}},
        {"update": {"status": "WAITING_TO_RESUME"}},
        {"fail": "the tool broke: <b>not bold</b>"},
    ]
    compared = await follow_in_lockstep(node_sdk, emulator, run_id, token, steps, skip_columns=())
    assert len(compared) == len(steps) + 1
    assert compared[0]["payload"] == {"city": "Z\u00fcrich", "deep": {"list": [1, {"x": None}]}}
    last = compared[-1]
    assert (last["status"], last["isFailed"], last["isCompleted"]) == ("FAILED", True, True)
    assert last["error"]["message"] == "the tool broke: <b>not bold</b>"
    PARITY_CORPUS.append(len(compared))


async def test_subscribe_run_matches_the_sdk_through_a_progress_bar_and_two_409s(
    node_sdk: NodeSdk, emulator: Any
) -> None:
    # What {% run_status %} shows: {"progress": …, "step": …} metadata, changed many times.
    run_id, token = emulator.trigger(OPEN_TASK, {})
    steps: list[dict[str, Any]] = [
        {"metadata": {"metadata": {"progress": 0, "step": "Starting", "log": []}}},
    ]
    for index in range(1, 11):
        steps.append(
            {
                "metadata": {
                    "operations": [
                        {"type": "set", "key": "progress", "value": index / 10},
                        {"type": "set", "key": "step", "value": f"Step {index}"},
                        {"type": "append", "key": "log", "value": f"line {index}"},
                        {"type": "increment", "key": "count", "value": 1},
                    ]
                }
            }
        )
        if index in (4, 8):
            steps.append({"fault": "must-refetch"})
    steps.append({"metadata": {"operations": [{"type": "delete", "key": "log"}]}})
    steps.append({"complete": "done as plain text"})
    compared = await follow_in_lockstep(
        node_sdk, emulator, run_id, token, steps, skip_columns=("payload",)
    )
    assert len(compared) == len(steps) + 1
    progress = [run.get("metadata", {}).get("progress") for run in compared]
    assert progress[-1] == 1
    assert compared[-1]["metadata"]["count"] == 10
    assert "log" not in compared[-1]["metadata"]
    assert compared[-1]["output"] == "done as plain text"
    PARITY_CORPUS.append(len(compared))


PARITY_CORPUS: list[int] = []


@pytest.fixture(scope="module", autouse=True)
def _report_corpus() -> Any:
    yield
    if PARITY_CORPUS:
        print(f"\nrun parity: {sum(PARITY_CORPUS)} run objects compared field by field")
