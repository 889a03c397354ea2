"""Issue 9, FANOUT: two daphne workers of the example project on one real redis-server with
``TRIGGER_DJANGO["FANOUT"]`` on. 50 viewers of one run, spread over both workers, cost one
upstream connection for the cluster; SIGKILL the worker holding the lease mid-stream, and every
viewer (those of the killed worker reconnect to the survivor and resubscribe from their cursor, as
the page does) ends with the exact text, no part received twice."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from bench.stack import Daphne
from tests.e2e.conftest import daphne_workers, worker_env
from tests.live.helpers import stream_reads_for
from tests.redis_server import RedisServer
from trigger_django.tickets import make_ticket

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]

VIEWERS = 50
USERS = 5  # MAX_STREAMS_PER_USER (32) is per user and process: all 50 end up on one worker
PARTS = 400
# Renewed every third of it: a loaded machine's event-loop stalls (seen up to ~1 s under
# PYTHONDEVMODE) must stay well under two thirds of it.
LEASE_SECONDS = 4
TIMEOUT = 10  # the viewers' idle timeout: longer than a takeover (LEASE_SECONDS and a poll)


@pytest.fixture
def fanout_workers(
    transactional_db: Any, emulator: Any, redis_server: RedisServer, tmp_path: Path
) -> Iterator[list[Daphne]]:
    """Two daphne processes of the example project, Redis channel layer and FANOUT on."""
    # 50 viewers of one run over USERS users: not the example's owner-only permission hook.
    env = worker_env(emulator, redis_server.url, "tests.e2e.shared_runs_settings")
    env["TRIGGER_FANOUT"] = "1"
    env["TRIGGER_FANOUT_LEASE_SECONDS"] = str(LEASE_SECONDS)
    with daphne_workers(env, tmp_path) as workers:
        yield workers


@pytest.fixture
def logins(transactional_db: Any, django_user_model: Any) -> list[tuple[Any, str]]:
    """``USERS`` logged-in users: ``(pk, Cookie header)``."""
    made = []
    for n in range(USERS):
        user = django_user_model.objects.create_user(f"fanout-viewer-{n}")
        client = Client()
        client.force_login(user)
        cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
        made.append((user.pk, f"{settings.SESSION_COOKIE_NAME}={cookie}"))
    return made


class PageViewer:
    """One page with one viewer of ``run_id``, speaking the page's protocol over a real socket:
    applies parts in cursor order, acknowledges the batches the server marks, and after a drop
    reconnects (to the next worker that answers) and resubscribes from its cursor."""

    def __init__(self, workers: list[Daphne], login: tuple[Any, str], run_id: str) -> None:
        self.workers = workers
        self.user_pk, self.cookie = login
        self.run_id = run_id
        self.received: list[str] = []  # every part id that came over the wire, in order
        self.chunks: list[str] = []
        self.cursor: str | None = None
        self.ended: dict[str, Any] | None = None
        self.connected_to: list[int] = []

    async def run(self, first: int) -> None:
        attempt = 0
        index = first
        while self.ended is None:
            worker = self.workers[index % len(self.workers)]
            try:
                async with await self._open(worker) as ws:
                    self.connected_to.append(worker.port)
                    attempt = 0
                    await self._serve(ws)
            except (OSError, InvalidHandshake, ConnectionClosed, TimeoutError):
                pass
            if self.ended is None:
                # The page's backoff: 100 ms doubling, minus up to half; then the next worker.
                attempt += 1
                await asyncio.sleep(min(0.1 * 2 ** (attempt - 1), 2) * (1 - random.random() / 2))
                index += 1

    async def _open(self, worker: Daphne) -> ClientConnection:
        return await connect(
            f"ws://127.0.0.1:{worker.port}/trigger/ws/",
            additional_headers={"Cookie": self.cookie, "Origin": worker.url},
            open_timeout=10,
            ping_interval=None,
        )

    async def _serve(self, ws: ClientConnection) -> None:
        subscribe = {
            "type": "subscribe",
            "sub": "v",
            "ticket": make_ticket(user_pk=self.user_pk, run_id=self.run_id, key="default"),
            "run_id": self.run_id,
            "key": "default",
            "timeout": TIMEOUT,
            "cursor": self.cursor,
        }
        await ws.send(json.dumps(subscribe))
        async for text in ws:
            message = json.loads(text)
            kind = message["type"]
            if kind == "parts":
                for batch in message["streams"]:
                    assert batch["sub"] == "v"
                    for part in batch["parts"]:
                        self.received.append(part["id"])
                        if self.cursor is None or int(part["id"]) > int(self.cursor):
                            self.chunks.append(part["chunk"])
                            self.cursor = part["id"]
                    if batch.get("ack"):
                        await ws.send(
                            json.dumps({"type": "ack", "sub": "v", "cursor": self.cursor})
                        )
            elif kind in {"complete", "error"}:
                self.ended = message
                return
            else:
                assert kind in {"subscribed", "ticket"}, message


async def lease_holder_pid(url: str, run_id: str) -> int | None:
    client = Redis.from_url(url, decode_responses=True)
    try:
        token = await client.get(f"trigger_django:lease:{{{run_id}:default}}")
    finally:
        await client.aclose()
    return None if token is None else int(token.split(":")[1])


async def until(predicate: Any, limit: float, what: str) -> None:
    # Process and protocol state have no event to wait on here: poll, bounded.
    try:
        async with asyncio.timeout(limit):
            while not await predicate():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {limit} s: {what}") from None


async def test_fifty_viewers_on_two_workers_one_upstream_read_and_a_killed_leader(
    fanout_workers: list[Daphne],
    redis_server: RedisServer,
    logins: list[tuple[Any, str]],
    emulator: Any,
    e2e_user: Any,  # created up front: the emulator fixture records it as the run's owner
) -> None:
    chunks = [f"w{n} " for n in range(PARTS)]
    run_id, _ = emulator.trigger("echo-parts", {"parts": chunks, "delay_ms": 20})
    viewers = [PageViewer(fanout_workers, logins[n % USERS], run_id) for n in range(VIEWERS)]
    tasks = [asyncio.create_task(v.run(first=n % 2)) for n, v in enumerate(viewers)]
    try:
        # Mid-stream: every viewer has parts, the run is still writing.
        async def all_reading() -> bool:
            return all(len(v.chunks) >= 40 for v in viewers)

        await until(all_reading, 60, "every viewer reading")
        assert all(v.ended is None for v in viewers)
        reads = stream_reads_for(emulator, run_id)
        assert len(reads) == 1, "one upstream connection for the whole cluster"
        pids = [w.process.pid for w in fanout_workers if w.process is not None]
        pid = await lease_holder_pid(redis_server.url, run_id)
        assert pid in pids, (pid, pids)
        (leader,) = [w for w in fanout_workers if w.process and w.process.pid == pid]
        survivor = next(w for w in fanout_workers if w is not leader)
        leader.kill()  # SIGKILL: no close handshakes, no lease release

        done = await asyncio.wait_for(asyncio.gather(*tasks), 120)
        assert done == [None] * VIEWERS
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    expected = "".join(chunks)
    on_killed = [v for v in viewers if len(set(v.connected_to)) > 1]
    assert on_killed, "some viewers were on the killed worker and moved"
    for viewer in viewers:
        assert viewer.ended == {"type": "complete", "sub": "v"}
        assert "".join(viewer.chunks) == expected
        assert len(viewer.received) == len(set(viewer.received)) == PARTS, "a part came twice"
        assert viewer.connected_to[-1] == survivor.port or len(viewer.connected_to) == 1
    # The takeover: one more upstream read, resuming after the last published cursor.
    reads = stream_reads_for(emulator, run_id)
    assert len(reads) == 2, [r["headers"].get("last-event-id") for r in reads]
    resumed_at = int(reads[1]["headers"]["last-event-id"])
    assert 40 <= resumed_at < PARTS
    assert survivor.process is not None
    assert survivor.process.poll() is None, "the surviving worker died"
