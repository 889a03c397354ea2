"""The Redis primitives of the cross-process fan-out against a real redis-server on a free port:
leases, the relay stream, reconnects and long blocking reads."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from tests.redis_server import RedisServer
from trigger_django.live.redis_feed import (
    Cursor,
    Lease,
    LeaseLost,
    RelayConflict,
    RelayEnd,
    RelayGap,
    RelayPart,
    StreamRelay,
    connect,
)

pytestmark = pytest.mark.redis


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path, persist=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def clients(redis_server: RedisServer) -> AsyncIterator[list[Redis]]:
    """Three separate clients, as three processes would have."""
    made = [connect(redis_server.url) for _ in range(3)]
    try:
        yield made
    finally:
        for client in made:
            await client.aclose()


def part(cursor: str, text: str, i: int = 0) -> RelayPart:
    return RelayPart(Cursor(cursor, i), json.dumps(text), 1_700_000_000_000)


def texts(entries: list) -> list[str]:
    return [json.loads(e.data) if isinstance(e, RelayPart) else e.kind for e in entries]


async def collect(follower, until: int) -> list:
    entries = []
    async for entry in follower:
        entries.append(entry)
        if len(entries) == until:
            break
    return entries


# -- Lease -------------------------------------------------------------------------------------


async def test_a_lease_is_held_by_one_client_at_a_time(clients: list[Redis]) -> None:
    a, b, _ = clients
    first, second = Lease(a, "run_1:out", ttl=30), Lease(b, "run_1:out", ttl=30)
    assert first.token != second.token
    assert await first.acquire()
    assert not await second.acquire()
    assert await first.acquire(), "acquiring again as the holder (a retry) must succeed"
    assert await second.holder() == first.token

    # The other client can neither extend nor drop it.
    assert not await second.renew()
    assert not await second.release()
    assert await b.get(second.key) == first.token

    assert await first.release()
    assert not await first.renew(), "a released lease is no longer ours"
    assert await second.acquire()
    assert await first.holder() == second.token


async def test_renewal_by_a_non_holder_does_not_extend_the_lease(clients: list[Redis]) -> None:
    a, b, _ = clients
    holder, other = Lease(a, "x", ttl=2), Lease(b, "x", ttl=60)
    assert await holder.acquire()
    assert not await other.renew()
    assert await a.pttl(holder.key) <= 2000


async def test_an_expired_lease_is_taken_over_within_its_ttl(clients: list[Redis]) -> None:
    a, b, _ = clients
    ttl = 1.0
    dead, successor = Lease(a, "y", ttl=ttl), Lease(b, "y", ttl=ttl)
    assert await dead.acquire()  # ... and then never renews, as a killed process would
    assert not await successor.acquire()
    await asyncio.wait_for(successor.wait_acquire(poll=0.05), timeout=ttl + 5)
    assert await successor.holder() == successor.token
    assert not await dead.renew(), "the old holder must not get it back by renewing"


async def test_the_keeper_holds_the_lease_past_its_ttl_and_releases_it_on_exit(
    clients: list[Redis],
) -> None:
    a, b, _ = clients
    ttl = 0.6
    holder, other = Lease(a, "z", ttl=ttl), Lease(b, "z", ttl=ttl)
    assert await holder.acquire()
    async with holder.kept() as keeper:
        # For four ttls, no one else can take it.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(other.wait_acquire(poll=0.05), timeout=4 * ttl)
        assert not keeper.lost.is_set()
    assert await a.get(holder.key) is None, "a kept lease is released when the block ends"


async def test_the_keeper_signals_a_lost_lease(clients: list[Redis]) -> None:
    a, b, _ = clients
    holder, thief = Lease(a, "w", ttl=0.6), Lease(b, "w", ttl=60)
    assert await holder.acquire()
    async with holder.kept() as keeper:
        # Someone else ends up holding it (e.g. after a long pause of this process).
        await b.delete(holder.key)
        assert await thief.acquire()
        await asyncio.wait_for(keeper.lost.wait(), timeout=5)
    assert await thief.holder() == thief.token, "a lost lease is not released by the old holder"


async def test_the_keeper_signals_loss_when_redis_stays_away_past_the_ttl(
    clients: list[Redis], redis_server: RedisServer
) -> None:
    a, _, _ = clients
    holder = Lease(a, "v", ttl=0.6)
    assert await holder.acquire()
    async with holder.kept() as keeper:
        redis_server.stop()  # and it does not come back: the lease may be anyone's by now
        await asyncio.wait_for(keeper.lost.wait(), timeout=10)


# -- Relay -------------------------------------------------------------------------------------


async def leader(client: Redis, relay_key: str = "out", *, ttl: float = 30):
    relay = StreamRelay(client, "run_1", relay_key)
    lease = relay.lease(ttl=ttl)
    assert await lease.acquire()
    return relay, lease, relay.publisher(lease, await relay.resume_point())


async def test_parts_are_read_in_order_from_any_cursor(clients: list[Redis]) -> None:
    a, b, _ = clients
    _, _, publisher = await leader(a)
    await publisher.publish([part("1", "Hel"), part("2", "lo")])
    await publisher.publish([part("3", ", ")])
    await publisher.publish([part("4", "world")])
    await publisher.end()

    reader = StreamRelay(b, "run_1", "out")
    everything = await reader.read()
    assert texts(everything) == ["Hel", "lo", ", ", "world", "complete"]
    assert [e.cursor.id for e in everything if isinstance(e, RelayPart)] == ["1", "2", "3", "4"]

    after_second = everything[1].entry_id
    assert texts(await reader.read(after_second)) == [", ", "world", "complete"]
    assert texts(await collect(reader.follow(after_second), until=99)) == [
        ", ",
        "world",
        "complete",
    ]


async def test_followers_live_and_late_get_every_part_once(clients: list[Redis]) -> None:
    a, b, c = clients
    _, _, publisher = await leader(a)
    live = asyncio.create_task(collect(StreamRelay(b, "run_1", "out").follow(block=1), 99))
    words = [f"w{n} " for n in range(40)]
    for n in range(0, 40, 4):
        await publisher.publish([part(str(k + 1), words[k]) for k in range(n, n + 4)])
        await asyncio.sleep(0)
    await publisher.end("error", status=404, message="Run not found")

    late = await collect(StreamRelay(c, "run_1", "out").follow(), 99)
    live_entries = await asyncio.wait_for(live, 10)
    for entries in (live_entries, late):
        assert texts(entries) == [*words, "error"]
        end = entries[-1]
        assert isinstance(end, RelayEnd)
        assert (end.kind, end.status, end.message) == ("error", 404, "Run not found")
        assert [e.position for e in entries] == list(range(1, 42))


async def test_a_new_leaseholder_resumes_right_after_the_last_published_cursor(
    clients: list[Redis],
) -> None:
    a, b, c = clients
    ttl = 0.5
    _, _, old = await leader(a, ttl=ttl)
    # v1 framing: one upstream entry can carry several parts (occurrences i).
    await old.publish([part("1700000000000-0", "a"), part("1700000000000-0", "b", 1)])
    await old.publish([part("1700000000001-0", "c")])
    # The leaseholder dies: no renewals, no release.

    relay_b = StreamRelay(b, "run_1", "out")
    lease_b = relay_b.lease(ttl=ttl)
    await asyncio.wait_for(lease_b.wait_acquire(poll=0.05), timeout=ttl + 5)
    resume = await relay_b.resume_point()
    assert resume.cursor == Cursor("1700000000001-0", 0)
    assert resume.end is None
    new = relay_b.publisher(lease_b, resume)
    await new.publish([part("1700000000002-0", "d"), part("1700000000002-0", "e", 1)])

    # The old one wakes up and tries to go on: refused, nothing written.
    with pytest.raises(LeaseLost):
        await old.publish([part("1700000000002-0", "d")])
    await new.end()

    entries = await collect(StreamRelay(c, "run_1", "out").follow(), 99)
    assert texts(entries) == ["a", "b", "c", "d", "e", "complete"]
    assert (await relay_b.resume_point()).end is not None


async def test_a_retried_publish_is_not_written_twice(clients: list[Redis]) -> None:
    a, _, _ = clients
    relay, lease, publisher = await leader(a)
    before = await relay.resume_point()
    await publisher.publish([part("1", "x"), part("2", "y")])
    # The same batch again from the tail seen before it, as after a lost reply.
    retry = relay.publisher(lease, before)
    assert await retry.publish([part("1", "x"), part("2", "y")]) == publisher.tail
    assert await a.xlen(relay.stream_key) == 2
    # A different batch from a stale tail is a conflict, not a silent duplicate.
    with pytest.raises(RelayConflict):
        await relay.publisher(lease, before).publish([part("1", "other")])
    assert await a.xlen(relay.stream_key) == 2


async def test_a_follower_behind_the_trimming_gets_a_gap_not_a_hole(
    clients: list[Redis],
) -> None:
    a, b, _ = clients
    relay = StreamRelay(a, "run_1", "out", maxlen=10)
    lease = relay.lease(ttl=30)
    assert await lease.acquire()
    publisher = relay.publisher(lease, await relay.resume_point())
    for n in range(0, 600, 100):
        await publisher.publish([part(str(k), f"p{k}") for k in range(n + 1, n + 101)])
        if n == 0:
            first_id = publisher.tail
    assert await a.xlen(relay.stream_key) < 600
    # A late joiner from the start, and one from a cursor whose entry was trimmed.
    with pytest.raises(RelayGap, match="trimmed"):
        await anext(StreamRelay(b, "run_1", "out").follow())
    with pytest.raises(RelayGap, match="trimmed"):
        await anext(StreamRelay(b, "run_1", "out").follow(first_id))
    # One at a cursor still held is fine: it gets the rest, in order, and then the end.
    at_550 = (await b.xrevrange(relay.stream_key, "+", "-", count=51))[-1][0]
    await publisher.end()
    rest = await collect(StreamRelay(b, "run_1", "out").follow(at_550), 999)
    assert texts(rest) == [*(f"p{k}" for k in range(551, 601)), "complete"]


async def test_a_follower_skips_parts_it_already_has(clients: list[Redis]) -> None:
    a, b, _ = clients
    _, _, publisher = await leader(a)
    await publisher.publish([part(str(n), f"p{n}") for n in range(1, 6)])
    await publisher.end()
    follower = StreamRelay(b, "run_1", "out").follow(skip_through=Cursor("3"))
    assert texts(await collect(follower, 99)) == ["p4", "p5", "complete"]


# -- Connection loss and long blocking reads ----------------------------------------------------


async def test_followers_and_publishers_continue_after_their_connections_are_killed(
    clients: list[Redis], redis_server: RedisServer
) -> None:
    a, b, _ = clients
    _, _, publisher = await leader(a)
    follower = StreamRelay(b, "run_1", "out").follow(block=1)
    await publisher.publish([part("1", "before")])
    assert texts([await asyncio.wait_for(anext(follower), 10)]) == ["before"]
    pending = asyncio.create_task(anext(follower))  # blocked in XREAD meanwhile

    admin = Redis.from_url(redis_server.url, decode_responses=True)
    try:
        killed = await admin.client_kill_filter(_type="normal", skipme=True)
    finally:
        await admin.aclose()
    assert killed >= 2

    await publisher.publish([part("2", "after")])
    await publisher.end()
    first = await asyncio.wait_for(pending, 10)
    rest = await collect(follower, 99)
    assert texts([first, *rest]) == ["after", "complete"]


async def test_a_restarted_redis_is_reconnected_to_and_the_relay_continues(
    clients: list[Redis], redis_server: RedisServer
) -> None:
    a, _, _ = clients
    _, lease, publisher = await leader(a, ttl=5)
    # The follower's client does not retry by itself: the follower has to reconnect.
    bare = connect(redis_server.url, retry=Retry(NoBackoff(), 0))
    try:
        async with lease.kept() as keeper:
            follower = StreamRelay(bare, "run_1", "out").follow(block=1)
            await publisher.publish([part("1", "before")])
            assert texts([await asyncio.wait_for(anext(follower), 10)]) == ["before"]
            pending = asyncio.create_task(anext(follower))

            redis_server.restart()  # every connection is lost; the data is kept (append-only)

            assert await lease.renew(), "the lease survives the restart, renewed on a reconnect"
            await publisher.publish([part("2", "after")])
            await publisher.end()
            first = await asyncio.wait_for(pending, 20)
            rest = await collect(follower, 99)
            assert texts([first, *rest]) == ["after", "complete"]
            assert follower.reconnects >= 1
            assert not keeper.lost.is_set(), "the keeper rode out the restart"
    finally:
        await bare.aclose()


async def test_an_idle_blocking_read_outlasts_redis_py_s_default_timeout(
    clients: list[Redis],
) -> None:
    _, b, _ = clients
    relay = StreamRelay(b, "run_1", "quiet")
    # One XREAD BLOCK of 7 s on a connect() client: no entries, and no read timeout.
    assert await relay.read(block=7.0) == []


async def test_a_blocking_read_longer_than_the_socket_timeout_is_refused(
    redis_server: RedisServer,
) -> None:
    plain = Redis.from_url(redis_server.url)  # redis-py 8's default read timeout, 5 s
    try:
        relay = StreamRelay(plain, "run_1", "out")
        with pytest.raises(ValueError, match="socket_timeout"):
            await relay.read(block=7.0)
        with pytest.raises(ValueError, match="socket_timeout"):
            relay.follow(block=7.0)
    finally:
        await plain.aclose()
