"""subscribe_run and subscribe_run_with_streams against a real emulator process."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random

import httpx
import pytest

from tests.settings import TEST_TRIGGER_SECRET_KEY
from trigger_django.client import (
    AuthenticationError,
    NotFoundError,
    PermissionDeniedError,
    RunUpdate,
    StreamChunk,
    StreamEnded,
    TriggerClient,
)

from .fakes import RecordingSleep


@pytest.fixture
async def client(emulator):
    async with TriggerClient(
        emulator.url, secret_key=TEST_TRIGGER_SECRET_KEY, retry_sleep=RecordingSleep()
    ) as client:
        yield client


def shape_gets(emulator, run_id: str) -> list[dict]:
    path = f"/realtime/v1/runs/{run_id}"
    return [r for r in emulator.requests() if r["method"] == "GET" and r["path"] == path]


async def test_a_run_from_executing_to_completed(emulator, client):
    run_id, _ = emulator.trigger(
        "echo-parts", {"parts": list(range(3)), "delay_ms": 150}, tags=["t1", "t 2"]
    )
    async with client.subscribe_run(run_id) as runs:
        states = [run async for run in runs]
    first, last = states[0], states[-1]
    assert first.id == run_id
    assert first.task_identifier == "echo-parts"
    assert first.status == "EXECUTING"
    assert first.is_executing
    assert first.finished_at is None
    assert first.tags == ("t1", "t 2")
    assert first.payload is None  # skipped by default, as the SDK does
    assert last.status == "COMPLETED"
    assert last.is_success
    assert last.is_completed
    assert last.output == {"count": 3}
    assert last.finished_at is not None
    assert last.finished_at.tzinfo is not None
    assert last.finished_at >= last.created_at
    assert "default" in last.realtime_streams
    assert all(s.updated_at <= t.updated_at for s, t in itertools.pairwise(states))
    gets = shape_gets(emulator, run_id)
    assert len(gets) >= 2


async def test_payload_is_decoded_when_not_skipped(emulator, client):
    run_id, _ = emulator.trigger("echo-parts", {"parts": ["a"], "note": "é"})
    async with client.subscribe_run(run_id, skip_columns=()) as runs:
        states = [run async for run in runs]
    assert states[-1].payload == {"parts": ["a"], "note": "é"}


async def test_metadata_changes_arrive(emulator, client):
    run_id, _ = emulator.trigger("demo-ai-writer", {"prompt": "hi"})
    async with client.subscribe_run(run_id) as runs:
        async for run in runs:
            if isinstance(run.metadata, dict) and run.metadata.get("stage") == (
                "awaiting-approval"
            ):
                break
    assert run.status in ("EXECUTING", "WAITING")
    await client.send_input(run_id, "approval", {"approved": True, "reviewer": "erin"})
    async with client.subscribe_run(run_id) as runs:
        stages = [run.metadata.get("stage") async for run in runs if run.metadata]
    assert stages[-1] == "approved"


async def test_unknown_run_wrong_key_and_foreign_token(emulator, client):
    with pytest.raises(NotFoundError):
        async for _ in client.subscribe_run("run_doesnotexist"):
            pass
    run_id, _ = emulator.trigger("echo-parts", {"parts": []})
    async with TriggerClient(emulator.url, secret_key="tr_dev_" + "w" * 40) as wrong:
        with pytest.raises(AuthenticationError):
            async for _ in wrong.subscribe_run(run_id):
                pass
    _, other_token = emulator.trigger("echo-parts", {"parts": []})
    async with TriggerClient(emulator.url, access_token=other_token) as foreign:
        with pytest.raises(PermissionDeniedError):
            async for _ in foreign.subscribe_run(run_id):
                pass


async def test_a_public_token_reads_the_run(emulator, client):
    run_id, token = emulator.trigger("echo-parts", {"parts": ["x"]})
    async with (
        TriggerClient(emulator.url, access_token=token) as reader,
        reader.subscribe_run(run_id) as runs,
    ):
        states = [run async for run in runs]
    assert states[-1].output == {"count": 1}


async def test_with_streams_delivers_every_part_and_the_completion(emulator, client):
    parts = [{"type": "text-delta", "delta": f"w{i} "} for i in range(20)]
    run_id, _ = emulator.trigger("echo-parts", {"parts": parts, "key": "ai", "delay_ms": 20})
    events = []
    async with client.subscribe_run_with_streams(run_id, drain_timeout=3) as stream:
        async for event in stream:
            events.append(event)
            runs = [e.run for e in events if isinstance(e, RunUpdate)]
            chunks = [e for e in events if isinstance(e, StreamChunk)]
            if runs and runs[-1].finished_at and len(chunks) == len(parts):
                break
    assert isinstance(events[0], RunUpdate)
    assert [e.chunk for e in events if isinstance(e, StreamChunk)] == parts
    assert {e.stream for e in events if isinstance(e, StreamChunk)} == {"ai"}
    assert [e for e in events if isinstance(e, StreamEnded) and e.error] == []
    assert [e.run for e in events if isinstance(e, RunUpdate)][-1].is_success


async def test_cancelled_run_subscriptions_return_their_connections(emulator):
    run_id, _ = emulator.trigger("echo-parts", {"parts": ["x"], "delay_ms": 600_000})
    rng = random.Random(11)
    async with TriggerClient(
        emulator.url, secret_key=TEST_TRIGGER_SECRET_KEY, retry_sleep=RecordingSleep()
    ) as client:

        async def follow() -> None:
            async with client.subscribe_run(run_id) as runs:
                async for _ in runs:
                    pass

        for _ in range(10):
            tasks = [asyncio.create_task(follow()) for _ in range(30)]
            await asyncio.sleep(rng.choice([0, 0.002, 0.05]))
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        # Live polls abandoned mid-hold end when the emulator answers (within its hold time).
        async with asyncio.timeout(60):
            await client.wait_abandoned()
        connections = list(client.http_client._transport._pool.connections)
        assert all(connection.is_idle() for connection in connections)
        async with client.subscribe_run(run_id) as runs:
            assert (await runs.__anext__()).status == "EXECUTING"


async def test_a_stream_created_mid_run_is_discovered_and_read(emulator, client):
    run_id, _ = emulator.trigger("conformance-open", {})
    auth = {"Authorization": f"Bearer {TEST_TRIGGER_SECRET_KEY}"}
    events = []
    async with (
        httpx.AsyncClient(base_url=emulator.url, headers=auth) as writer,
        client.subscribe_run_with_streams(run_id, drain_timeout=1) as stream,
    ):
        async for event in stream:
            events.append(event)
            if len(events) == 1:
                assert isinstance(event, RunUpdate)
                assert event.run.realtime_streams == ()
                # As a task does: create the stream, then write to it.
                response = await writer.put(f"/realtime/v1/streams/{run_id}/self/late")
                assert response.is_success
                response = await writer.post(
                    f"/realtime/v1/streams/{run_id}/self/late/append", content="first part"
                )
                assert response.is_success
            if isinstance(event, StreamChunk) and event.chunk == "first part":
                response = await writer.post(
                    f"/_emulator/runs/{run_id}/complete", json={"output": None}
                )
                assert response.is_success
    runs = [e.run for e in events if isinstance(e, RunUpdate)]
    assert runs[-1].is_success
    assert "late" in runs[-1].realtime_streams
    chunks = [e for e in events if isinstance(e, StreamChunk)]
    assert [(c.stream, c.chunk) for c in chunks] == [("late", "first part")]
    assert chunks[0].run.realtime_streams == ("late",)
