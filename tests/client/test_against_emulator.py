"""read_stream, send_input and trigger against a real emulator process (both framings)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random

import pytest

from tests.settings import TEST_TRIGGER_SECRET_KEY
from trigger_django.client import (
    AuthenticationError,
    NotFoundError,
    PermissionDeniedError,
    RunCompletedError,
    TriggerClient,
    verify_public_token,
)

from .fakes import RecordingSleep

PARTS = 10_000
# Records delivered on each connection before the emulator drops it, one fault per connection.
DROP_POSITIONS = [0, 1, 2, 99, 100, 101, 999, 1000, 1001, 0, 1, 3333]


@pytest.fixture(params=["v2", "v1"])
def upstream(request):
    return request.getfixturevalue("emulator" if request.param == "v2" else "emulator_v1")


def emulator_client(upstream, **limits) -> TriggerClient:
    """A client of ``upstream`` with the test key, recorded (not real) retry sleeps, and
    ``limits`` (``max_connections``, ``max_keepalive_connections``)."""
    return TriggerClient(
        upstream.url, secret_key=TEST_TRIGGER_SECRET_KEY, retry_sleep=RecordingSleep(), **limits
    )


@pytest.fixture
async def client(upstream):
    async with emulator_client(upstream) as client:
        yield client


def echo_run(emulator, parts: list, key: str = "default") -> str:
    run_id, _ = emulator.trigger("echo-parts", {"parts": parts, "key": key})
    emulator.wait_for(lambda: emulator.run(run_id)["status"] != "EXECUTING")
    return run_id


def stream_gets(emulator, run_id: str, key: str = "default") -> list[dict]:
    path = f"/realtime/v1/streams/{run_id}/{key}"
    return [r for r in emulator.requests() if r["method"] == "GET" and r["path"] == path]


async def test_resume_after_drops_loses_and_duplicates_nothing(upstream, client):
    run_id = echo_run(upstream, list(range(PARTS)))
    for after in DROP_POSITIONS:
        upstream.inject_fault(run_id, "default", "drop", after=after)
    stream = client.read_stream(run_id, timeout_seconds=1)
    chunks = [part.chunk async for part in stream]
    assert len(chunks) == PARTS
    assert chunks == list(range(PARTS))  # in order: none lost, none duplicated
    assert stream.stream_version == upstream.stream_version
    gets = stream_gets(upstream, run_id)
    assert len(gets) == len(DROP_POSITIONS) + 1
    # Each reconnect resumes exactly after the last part delivered before the drop.
    assert "last-event-id" not in gets[0]["headers"]
    assert all("last-event-id" in get["headers"] for get in gets[DROP_POSITIONS.index(1) + 1 :])


async def test_5xx_and_429_are_retried_then_recover(upstream, client):
    run_id = echo_run(upstream, ["a", "b", "c"])
    upstream.inject_fault(run_id, "default", "status", status=503, times=2)
    upstream.inject_fault(run_id, "default", "status", status=429)
    upstream.inject_fault(run_id, "default", "status", status=500)
    chunks = [part.chunk async for part in client.read_stream(run_id, timeout_seconds=1)]
    assert chunks == ["a", "b", "c"]
    assert [g["status"] for g in stream_gets(upstream, run_id)] == [503, 503, 429, 500, 200]
    assert len(client._sleep.delays) == 4


async def test_unknown_run_is_not_found(client):
    with pytest.raises(NotFoundError) as caught:
        async for _ in client.read_stream("run_doesnotexist", "ai-output"):
            pass
    assert caught.value.status == 404
    assert str(caught.value).startswith(
        "404 Could not subscribe to stream run_doesnotexist/ai-output"
    )
    assert client._sleep.delays == []


async def test_wrong_key_is_an_authentication_error(upstream):
    run_id = echo_run(upstream, [1])
    async with TriggerClient(upstream.url, secret_key="tr_dev_" + "w" * 40) as client:
        with pytest.raises(AuthenticationError) as caught:
            async for _ in client.read_stream(run_id):
                pass
    assert caught.value.status == 401


async def test_token_for_another_run_is_permission_denied(upstream):
    run_id = echo_run(upstream, [1])
    _, other_token = upstream.trigger("echo-parts", {"parts": []})
    async with TriggerClient(upstream.url, access_token=other_token) as client:
        with pytest.raises(PermissionDeniedError) as caught:
            async for _ in client.read_stream(run_id):
                pass
    assert caught.value.status == 403


async def test_refresh_token_recovers_from_a_rejected_token(upstream):
    run_id, good_token = upstream.trigger("echo-parts", {"parts": ["x"]})
    _, other_token = upstream.trigger("echo-parts", {"parts": []})
    refreshed = []

    async def refresh() -> str:
        refreshed.append(True)
        return good_token

    async with TriggerClient(
        upstream.url, access_token=other_token, retry_sleep=RecordingSleep()
    ) as client:
        stream = client.read_stream(run_id, timeout_seconds=1, refresh_token=refresh)
        assert [part.chunk async for part in stream] == ["x"]
    assert refreshed == [True]


async def test_stall_is_detected_and_the_read_resumes(upstream, client):
    run_id = echo_run(upstream, list(range(5)))
    upstream.inject_fault(run_id, "default", "drop", after=2)
    upstream.inject_fault(run_id, "default", "stall", seconds=60)
    # The stall limit must exceed the server's quiet periods (idle close after 1 s here), with
    # room to spare on a loaded machine.
    stream = client.read_stream(run_id, timeout_seconds=1, stall_timeout=3)
    assert [part.chunk async for part in stream] == [0, 1, 2, 3, 4]
    gets = stream_gets(upstream, run_id)
    assert len(gets) >= 3  # dropped, stalled, then the rest
    assert gets[1]["headers"].get("last-event-id") == gets[2]["headers"].get("last-event-id")
    assert len(client._sleep.delays) == len(gets) - 1


async def test_malformed_frames_do_not_break_the_reader(upstream, client):
    run_id = echo_run(upstream, ["a", "b"])
    upstream.inject_fault(run_id, "default", "malformed")
    chunks = [part.chunk async for part in client.read_stream(run_id, timeout_seconds=1)]
    # The SDK's parsing: a non-JSON v1 line arrives as the raw string, a v2 record whose body is
    # not an envelope arrives with an undefined (None) chunk; the real parts all follow.
    assert chunks[-2:] == ["a", "b"]
    assert len(stream_gets(upstream, run_id)) == 1


def _pool_connections(client: TriggerClient) -> list:
    return list(client.http_client._transport._pool.connections)


async def test_cancelling_the_reader_closes_its_connection(upstream, client):
    run_id, _ = upstream.trigger("echo-parts", {"parts": ["first", *range(50)], "delay_ms": 200})
    first = asyncio.Event()

    async def consume():
        async for _ in client.read_stream(run_id, timeout_seconds=60):
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 10)
    assert len(_pool_connections(client)) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Closed at once, not parked in the pool as keep-alive: its body was not finished.
    assert _pool_connections(client) == []


async def test_aclose_closes_the_connection_and_the_pool_is_reused(upstream, client):
    # Slow enough that the run is still executing (and accepting input) at the end of the test.
    run_id, _ = upstream.trigger("echo-parts", {"parts": list(range(30)), "delay_ms": 1000})
    stream = client.read_stream(run_id, timeout_seconds=60)
    await stream.__anext__()
    await stream.aclose()
    assert _pool_connections(client) == []
    # Ordinary calls share the pool and leave an idle keep-alive connection for the next one.
    assert await client.send_input(run_id, "approval", {"ok": True}) == {"ok": True}
    await client.send_input(run_id, "approval", {"ok": True})
    connections = _pool_connections(client)
    assert len(connections) == 1
    assert connections[0].is_idle()


async def test_send_input_and_trigger(upstream, client):
    # No simulated task has this id, so the run stays EXECUTING and accepts input.
    handle = await client.trigger("waits-for-input", {"question": "?"}, tags=["t1"])
    assert handle.id.startswith("run_")
    scopes = verify_public_token(handle.public_access_token, TEST_TRIGGER_SECRET_KEY)
    assert f"read:runs:{handle.id}" in scopes
    assert await client.send_input(handle.id, "approval", {"answer": 42}) == {"ok": True}
    assert upstream.run(handle.id)["tags"] == ["t1"]
    upstream.complete_run(handle.id)
    with pytest.raises(RunCompletedError):
        await client.send_input(handle.id, "approval", {"answer": 43})
    with pytest.raises(NotFoundError):
        await client.send_input("run_nope", "approval", 1)


async def test_public_token_reads_the_stream(upstream, client):
    run_id = echo_run(upstream, ["secret part"])
    token = await client.create_public_token({"read": {"runs": [run_id]}}, "5m")
    async with TriggerClient(upstream.url, access_token=token) as reader:
        chunks = [p.chunk async for p in reader.read_stream(run_id, timeout_seconds=1)]
    assert chunks == ["secret part"]


# -- cancellation never leaks a pooled connection (issue 10 item 1, encode/httpcore#1093) -----


async def _settled_pool(client: TriggerClient) -> list:
    # Every abandoned send has finished and closed its response: the pool is in its final state.
    async with asyncio.timeout(60):
        await client.wait_abandoned()
    return _pool_connections(client)


async def _cancel_after(coro_factory, delay: float) -> None:
    task = asyncio.create_task(coro_factory())
    # 0: cancelled before its first step, or right inside send.
    await asyncio.sleep(delay)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("max_connections", [1000, 3])
async def test_cancelled_reads_at_random_points_return_their_connections(upstream, max_connections):
    rng = random.Random(1093)
    # One run keeps streaming slowly (reads are cancelled while iterating), one is long idle
    # (cancelled waiting for the first part).
    slow_run, _ = upstream.trigger("echo-parts", {"parts": list(range(100)), "delay_ms": 2})
    idle_run, _ = upstream.trigger("echo-parts", {"parts": ["x"], "delay_ms": 600_000})
    async with emulator_client(upstream, max_connections=max_connections) as client:
        # An idle keep-alive connection of an ordinary call, which must stay as it is.
        assert await client.send_input(idle_run, "approval", {"ok": True}) == {"ok": True}
        idle_before = len(_pool_connections(client))
        assert idle_before == 1

        def reader(run_id: str):
            async def read() -> None:
                async for _ in client.read_stream(run_id, timeout_seconds=60):
                    pass

            return read

        cancellations = 0
        for _round in range(40 if max_connections > 3 else 20):
            delays = [
                rng.choice([0.0, rng.uniform(0, 0.003), rng.uniform(0, 0.03)]) for _ in range(50)
            ]
            # Concurrent, so that (with 3 connections) requests queue for the pool as well.
            await asyncio.gather(
                *(
                    _cancel_after(reader(slow_run if i % 2 else idle_run), delay)
                    for i, delay in enumerate(delays)
                )
            )
            cancellations += len(delays)
        assert cancellations >= 1000
        connections = await _settled_pool(client)
        assert len(connections) <= idle_before
        assert all(connection.is_idle() for connection in connections)
        # The pool still serves: a new read and an ordinary call both work.
        done_run = echo_run(upstream, ["after", "churn"])
        chunks = [part.chunk async for part in client.read_stream(done_run, timeout_seconds=1)]
        assert chunks == ["after", "churn"]
        assert await client.send_input(idle_run, "approval", {"ok": True}) == {"ok": True}


@pytest.mark.parametrize("gap", [0, 1, 2, 3, 5, 8])
async def test_a_reader_cancelled_twice_in_a_row_returns_its_connection(upstream, gap):
    # A deadline cancels the reading task, and its owner cancels it again `gap` loop steps
    # later (a feed's drain deadline, then the feed closing). httpcore's clean-up of the first
    # cancellation suspends; the second one, landing there, used to leave the connection ACTIVE
    # in the pool for good (the soak's leak). Both reading and ending in the middle of a part.
    run_id, _ = upstream.trigger("echo-parts", {"parts": list(range(1000)), "delay_ms": 5})
    async with emulator_client(upstream, max_keepalive_connections=0) as client:
        for _attempt in range(10):
            got_one = asyncio.Event()

            async def read(got_one: asyncio.Event = got_one) -> None:
                async for _ in client.read_stream(run_id, timeout_seconds=60):
                    got_one.set()

            task = asyncio.create_task(read())
            await asyncio.wait_for(got_one.wait(), 10)
            task.cancel()
            for _ in range(gap):
                await asyncio.sleep(0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Every connection is closed (none kept idle): any one left is stranded.
        assert await _settled_pool(client) == []


async def test_cancelled_send_input_returns_its_connection(upstream, client):
    run_id, _ = upstream.trigger("echo-parts", {"parts": ["x"], "delay_ms": 600_000})
    rng = random.Random(7)
    for _ in range(300):

        async def send() -> None:
            await client.send_input(run_id, "approval", {"ok": True})

        await _cancel_after(send, rng.choice([0.0, rng.uniform(0, 0.003)]))
    connections = await _settled_pool(client)
    assert all(connection.is_idle() for connection in connections)
    assert len(connections) <= 100  # max_keepalive_connections
    assert await client.send_input(run_id, "approval", {"ok": True}) == {"ok": True}


async def test_a_send_cancelled_before_it_is_written_is_never_sent(emulator):
    # One connection, held by a stream: the send waits for the pool, and is cancelled there.
    run_id, _ = emulator.trigger("echo-parts", {"parts": ["x"], "delay_ms": 600_000})
    async with emulator_client(emulator, max_connections=1) as client:
        stream = client.read_stream(run_id, timeout_seconds=60)
        assert (await stream.__anext__()).chunk == "x"
        send = asyncio.create_task(client.send_input(run_id, "approval", {"never": "sent"}))
        pool = client.http_client._transport._pool
        for _ in range(1000):  # a few loop steps: until the send is queued for the pool
            if pool._requests[1:]:
                break
            await asyncio.sleep(0)
        assert pool._requests[1:], "the send never queued for the pool"
        send.cancel()
        with pytest.raises(asyncio.CancelledError):
            await send
        await stream.aclose()  # frees the slot: the abandoned send gets it, and gives it up
        async with asyncio.timeout(30):
            await client.wait_abandoned()
        assert _pool_connections(client) == []
        assert await client.send_input(run_id, "approval", {"sent": True}) == {"ok": True}
    posts = [
        r
        for r in emulator.requests()
        if r["method"] == "POST" and r["path"] == f"/realtime/v1/streams/{run_id}/input/approval"
    ]
    assert len(posts) == 1  # only the second send reached the server
    inputs = json.dumps(emulator.run(run_id)["inputs"])
    assert "never" not in inputs
    assert '"sent": true' in inputs
