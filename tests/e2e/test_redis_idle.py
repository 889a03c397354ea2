"""Issue 15: with the Redis channel layer (the example project with REDIS_URL, as
docs/deployment.md configures it), idle sockets stay open far past redis-py 8's 5 s read
timeout, on each of two daphne workers sharing one Redis, and then stream to the end."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect

from bench.stack import Daphne
from tests.e2e.conftest import daphne_workers, worker_env
from tests.redis_server import RedisServer
from trigger_django.emulator.tasks import demo_answer_tokens
from trigger_django.tickets import make_ticket

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]

IDLE_SECONDS = 15  # three times redis-py 8's default socket_timeout


@pytest.fixture
def two_workers(
    transactional_db: Any, emulator: Any, redis_server: RedisServer, tmp_path: Path
) -> Iterator[list[Daphne]]:
    """Two daphne processes of the example project on one Redis channel layer."""
    env = worker_env(emulator, redis_server.url, "example_project.settings")
    with daphne_workers(env, tmp_path) as workers:
        yield workers


async def open_socket(server: Daphne, cookie: dict[str, str]) -> ClientConnection:
    return await connect(
        f"ws://127.0.0.1:{server.port}/trigger/ws/",
        additional_headers={
            "Cookie": f"{cookie['name']}={cookie['value']}",
            "Origin": server.url,
        },
        open_timeout=10,
    )


async def stays_open(ws: ClientConnection, seconds: float) -> None:
    """Wait for the server to close the socket; it must not within ``seconds``."""
    try:
        await asyncio.wait_for(ws.wait_closed(), seconds)
    except TimeoutError:
        return
    raise AssertionError(
        f"the idle socket was closed with {ws.close_code} {ws.close_reason!r} "
        f"before {seconds} s were up"
    )


async def blocked_in_bzpopmin(url: str) -> int:
    client = Redis.from_url(url, decode_responses=True)
    try:
        return sum(1 for c in await client.client_list() if c.get("cmd") == "bzpopmin")
    finally:
        await client.aclose()


async def stream_to_the_end(ws: ClientConnection, user_pk: Any, run_id: str) -> str:
    await ws.send(
        json.dumps(
            {
                "type": "subscribe",
                "sub": "s1",
                "ticket": make_ticket(user_pk=user_pk, run_id=run_id, key="ai-output"),
                "run_id": run_id,
                "key": "ai-output",
                "timeout": 1,
                "start_index": None,
                "cursor": None,
            }
        )
    )
    text = []
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if message["type"] == "parts":
            for stream in message["streams"]:
                assert stream["sub"] == "s1"
                text.extend(part["chunk"] for part in stream["parts"])
                await ws.send(
                    json.dumps({"type": "ack", "sub": "s1", "cursor": stream["parts"][-1]["id"]})
                )
        elif message["type"] == "complete":
            return "".join(text)
        else:
            assert message["type"] in {"subscribed", "ticket"}, message


async def test_idle_sockets_outlive_the_redis_read_timeout_on_two_workers(
    two_workers: list[Daphne],
    redis_server: RedisServer,
    session_cookie: dict[str, str],
    e2e_user: Any,
    emulator: Any,
) -> None:
    sockets = [await open_socket(server, session_cookie) for server in two_workers]
    try:
        # Both idle at once: each consumer sits in channels_redis's blocking pop meanwhile.
        results = await asyncio.gather(
            *(stays_open(ws, IDLE_SECONDS) for ws in sockets), return_exceptions=True
        )
        failures = [f"worker {n}: {r}" for n, r in enumerate(results, 1) if r is not None]
        assert not failures, failures
        # They idled in channels_redis's blocking pop, i.e. really on this Redis.
        assert await blocked_in_bzpopmin(redis_server.url) >= 2

        prompts = [f"idle worker {n} then a stream" for n in (1, 2)]
        runs = [
            emulator.trigger(
                "demo-ai-writer", {"prompt": p, "tokens_per_second": 200, "await_approval": False}
            )[0]
            for p in prompts
        ]
        texts = await asyncio.gather(
            *(
                stream_to_the_end(ws, e2e_user.pk, run)
                for ws, run in zip(sockets, runs, strict=True)
            )
        )
        assert texts == ["".join(demo_answer_tokens(p)) for p in prompts]
    finally:
        for ws in sockets:
            await ws.close()
    for server in two_workers:
        assert server.process is not None
        assert server.process.poll() is None, "a daphne worker died"
