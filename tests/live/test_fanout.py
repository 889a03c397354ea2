"""The fan-out source (``live.fanout``): two hubs in one process, each with its own Redis client
(as two server processes would have), on a real redis-server and the real emulator."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.live.helpers import pool_busy, stream_reads_for, wait_until
from tests.redis_server import RedisServer
from trigger_django.live.fanout import Fanout, FanoutSource
from trigger_django.live.hub import Hub, Source
from trigger_django.live.redis_feed import connect
from trigger_django.live.sources import OutputStream
from trigger_django.live.subscription import Outlet, Subscription
from trigger_django.upstream import aclose_http_clients

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]

LEASE = 1.0


@pytest.fixture(autouse=True)
async def _close_shared_pool() -> AsyncIterator[None]:
    yield
    await aclose_http_clients()


class Node:
    """One 'server process': its own hub and its own fan-out on its own Redis client."""

    def __init__(self, url: str, name: str, **options: Any) -> None:
        self.name = name
        self.hub = Hub(asyncio.get_running_loop(), throttle=0.016)
        self.hub.linger = 0.1
        self.fanout = Fanout(connect(url), lease_seconds=LEASE, **options)

    def source(self, run_id: str, key: str = "default") -> Source:
        return FanoutSource(OutputStream(run_id, key), self.fanout)

    def viewer(self, run_id: str, *, timeout: int = 2, cursor: str | None = None) -> Viewer:
        return Viewer(self.hub, self.source(run_id), timeout=timeout, cursor=cursor)


class Viewer:
    """A page with one viewer, straight on a hub: the frames it would be sent."""

    def __init__(
        self, hub: Hub, source: Source, *, timeout: int = 2, cursor: str | None = None
    ) -> None:
        self.hub = hub
        self.parts: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.terminal: dict[str, Any] | None = None
        self.done = asyncio.Event()
        self.outlet = Outlet(
            send=self.send,
            window_parts=100_000,
            budget=64 * 1024 * 1024,
            on_finished=self.finished,
            schedule=hub.schedule,
        )
        self.subscription = Subscription("s1", self.outlet, timeout=timeout, cursor=cursor)
        self.outlet.subscriptions["s1"] = self.subscription
        hub.subscribe(source, self.subscription)

    async def send(self, text: str) -> None:
        message = json.loads(text)
        if message["type"] == "parts":
            for batch in message["streams"]:
                self.parts.extend(batch["parts"])
            # The encoded parts exactly as sent (to compare with the non-fanout path).
            self.raw.append(text)
        else:
            self.terminal = message

    def finished(self, subscription: Subscription) -> None:
        self.outlet.subscriptions.pop(subscription.sub_id, None)
        self.hub.leave(subscription)
        self.done.set()

    def leave(self) -> None:
        self.outlet.closed = True
        self.outlet.subscriptions.pop("s1", None)
        self.hub.leave(self.subscription)

    @property
    def text(self) -> str:
        return "".join(str(p["chunk"]) for p in self.parts)

    async def wait(self, limit: float = 20) -> dict[str, Any]:
        await asyncio.wait_for(self.done.wait(), limit)
        assert self.terminal is not None
        return self.terminal


@pytest.fixture
async def nodes(redis_server: RedisServer) -> AsyncIterator[list[Node]]:
    made = [Node(redis_server.url, "a"), Node(redis_server.url, "b")]
    try:
        yield made
    finally:
        for node in made:
            await node.fanout.aclose()


def append_parts(emulator: Any, run_id: str, chunks: list[str], key: str = "default") -> None:
    for chunk in chunks:
        response = emulator.client.post(
            f"/realtime/v1/streams/{run_id}/self/{key}/append", content=chunk.encode()
        )
        response.raise_for_status()


async def test_two_hubs_share_one_upstream_read_and_get_exactly_what_the_direct_path_gets(
    upstream: Any, nodes: list[Node]
) -> None:
    chunks = [f"tok{i} " for i in range(80)]
    run_id, _ = upstream.trigger("echo-parts", {"parts": chunks, "delay_ms": 10})
    a, b = nodes
    one, two = a.viewer(run_id), b.viewer(run_id)
    ends = await asyncio.gather(one.wait(), two.wait())
    assert ends == [{"type": "complete", "sub": "s1"}] * 2
    for viewer in (one, two):
        assert viewer.text == "".join(chunks)
        assert [p["id"] for p in viewer.parts] == [str(n) for n in range(80)]
    # One upstream read for both "processes".
    assert len(stream_reads_for(upstream, run_id)) == 1
    # The parts are byte for byte those of the non-fanout path (same id, chunk, timestamp).
    direct = Viewer(
        Hub(asyncio.get_running_loop(), throttle=0.016), OutputStream(run_id, "default")
    )
    await direct.wait()
    assert direct.parts == one.parts == two.parts
    # Both campaigns stopped with their followers, and the lease was released.
    await wait_until(lambda: not a.fanout.campaigns and not b.fanout.campaigns)
    async with asyncio.timeout(10):
        while await a.fanout.redis.keys("trigger_django:lease:*"):  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_a_late_joiner_and_a_cursor_on_the_other_hub_get_exactly_the_missing_parts(
    upstream: Any, nodes: list[Node]
) -> None:
    a, b = nodes
    run_id, _ = upstream.trigger("external-writer", {})
    first = a.viewer(run_id, timeout=5)
    await asyncio.to_thread(append_parts, upstream, run_id, [f"p{i} " for i in range(20)])
    await wait_until(lambda: len(first.parts) == 20, 10)
    # The cursor first: b's feed starts from it (found in the relay from its tail), and the
    # late joiner from the start catches up through its own relay read from the start.
    resumed = b.viewer(run_id, timeout=5, cursor="7")
    late = b.viewer(run_id, timeout=5)
    await wait_until(lambda: len(late.parts) == 20 and len(resumed.parts) == 12, 10)
    await asyncio.to_thread(append_parts, upstream, run_id, [f"q{i} " for i in range(10)])
    await asyncio.gather(first.wait(), late.wait(), resumed.wait())
    everything = "".join(f"p{i} " for i in range(20)) + "".join(f"q{i} " for i in range(10))
    assert first.text == late.text == everything
    assert [p["id"] for p in resumed.parts] == [str(n) for n in range(8, 30)]
    assert len(stream_reads_for(upstream, run_id)) == 1


async def test_the_other_hub_takes_over_when_the_leader_leaves_with_no_gap_and_no_duplicate(
    upstream: Any, nodes: list[Node]
) -> None:
    a, b = nodes
    run_id, _ = upstream.trigger("external-writer", {})
    leader_viewer = a.viewer(run_id, timeout=30)
    await wait_until(lambda: a.fanout.leaders(), 10)
    follower_viewer = b.viewer(run_id, timeout=3)
    await asyncio.to_thread(append_parts, upstream, run_id, [f"x{i} " for i in range(15)])
    await wait_until(lambda: len(follower_viewer.parts) == 15, 10)
    assert not b.fanout.leaders()
    # The leader's only viewer leaves: it stops reading and releases the lease; b takes over.
    leader_viewer.leave()
    await wait_until(lambda: b.fanout.leaders() and not a.fanout.campaigns, 10)
    await asyncio.to_thread(append_parts, upstream, run_id, [f"y{i} " for i in range(15)])
    assert await follower_viewer.wait() == {"type": "complete", "sub": "s1"}
    assert follower_viewer.text == "".join(f"x{i} " for i in range(15)) + "".join(
        f"y{i} " for i in range(15)
    )
    assert [p["id"] for p in follower_viewer.parts] == [str(n) for n in range(30)]
    reads = stream_reads_for(upstream, run_id)
    assert len(reads) == 2, reads
    # The new leader resumed after the last published cursor.
    assert reads[1]["headers"].get("last-event-id") == "14", reads[1]


async def test_a_terminal_upstream_error_reaches_every_hub_as_the_direct_path_says_it(
    upstream: Any, nodes: list[Node]
) -> None:
    a, b = nodes
    missing = "run_doesnotexist0000000000"
    one, two = a.viewer(missing), b.viewer(missing)
    direct = Viewer(
        Hub(asyncio.get_running_loop(), throttle=0.016), OutputStream(missing, "default")
    )
    ends = await asyncio.gather(one.wait(), two.wait(), direct.wait())
    assert ends[0]["type"] == "error", ends
    assert ends[0] == ends[1] == ends[2]
    # A new viewer after the error reads again (as a new subscribe does without fan-out).
    again = b.viewer(missing)
    assert (await again.wait()) == ends[0]
    assert len(stream_reads_for(upstream, missing)) == 3  # 1 relay read, 1 direct, 1 again


async def test_a_viewer_older_than_the_relay_keeps_reads_upstream_then_follows_the_relay(
    upstream: Any, nodes: list[Node]
) -> None:
    a, b = nodes
    chunks = [f"r{i} " for i in range(300)]
    run_id, _ = upstream.trigger("echo-parts", {"parts": chunks})
    first = a.viewer(run_id, timeout=30)
    await wait_until(lambda: len(first.parts) == 300, 20)
    # The relay no longer holds the first 250 parts (as MAXLEN trims a long stream).
    relay = first_relay(a, run_id)
    await a.fanout.redis.xtrim(relay, maxlen=50, approximate=False)
    late = b.viewer(run_id, timeout=30)
    await wait_until(lambda: len(late.parts) == 300, 20)
    assert late.text == "".join(chunks)
    assert [p["id"] for p in late.parts] == [str(n) for n in range(300)]
    # Its own read stopped at the relay's oldest part (long before its 30 s idle timeout): only
    # the leader's read is open now.
    await wait_until(lambda: pool_busy() == 1, 10)
    reads = stream_reads_for(upstream, run_id)
    assert len(reads) == 2
    assert "last-event-id" not in reads[1]["headers"]
    first.leave()
    late.leave()
    await wait_until(lambda: pool_busy() == 0 and not a.fanout.campaigns, 10)


def first_relay(node: Node, run_id: str) -> str:
    return node.fanout.relay_for(OutputStream(run_id, "default")).stream_key


async def test_v1_entries_of_several_lines_relay_as_directly_and_a_takeover_rereads_whole_entries(
    trigger_settings: Any, emulator_v1: Any, nodes: list[Node]
) -> None:
    trigger_settings.TRIGGER_DJANGO = {
        **trigger_settings.TRIGGER_DJANGO,
        "API_URL": emulator_v1.url,
    }
    a, b = nodes
    run_id, _ = emulator_v1.trigger("external-writer", {})

    def write(body: bytes) -> None:  # one body read is one v1 entry (several lines: several parts)
        emulator_v1.client.post(
            f"/realtime/v1/streams/{run_id}/self/default", content=body
        ).raise_for_status()

    leader_viewer = a.viewer(run_id, timeout=30)
    await wait_until(lambda: a.fanout.leaders(), 10)
    follower_viewer = b.viewer(run_id, timeout=3)
    for body in (b'"a1"\n"a2"\n"a3"\n', b'"b1"\n', b'"c1"\n"c2"\n'):
        await asyncio.to_thread(write, body)
    await wait_until(lambda: len(follower_viewer.parts) == 6, 10)
    leader_viewer.leave()
    await wait_until(lambda: b.fanout.leaders() and not a.fanout.campaigns, 10)
    await asyncio.to_thread(write, b'"d1"\n"d2"\n')
    assert await follower_viewer.wait() == {"type": "complete", "sub": "s1"}
    parts = follower_viewer.parts
    assert [p["chunk"] for p in parts] == ["a1", "a2", "a3", "b1", "c1", "c2", "d1", "d2"]
    assert [p.get("i", 0) for p in parts] == [0, 1, 2, 0, 0, 1, 0, 1]
    entries = list(dict.fromkeys(p["id"] for p in parts))
    assert len(entries) == 4
    # The new leader re-read the last published entry whole (after the entry before it), and
    # relayed only what was new.
    reads = stream_reads_for(emulator_v1, run_id)
    assert len(reads) == 2
    assert reads[1]["headers"].get("last-event-id") == entries[1]
    # The same parts, byte for byte, as the direct path.
    direct = Viewer(
        Hub(asyncio.get_running_loop(), throttle=0.016), OutputStream(run_id, "default")
    )
    await direct.wait()
    assert direct.parts == parts


async def test_a_subscribe_while_redis_is_unreachable_is_an_in_band_503(upstream: Any) -> None:
    from tests.redis_server import free_port

    node = Node(f"redis://127.0.0.1:{free_port()}/0", "nowhere")  # nothing listens there
    try:
        run_id, _ = upstream.trigger("echo-parts", {"parts": ["x"]})
        viewer = node.viewer(run_id)
        end = await viewer.wait(30)
        assert end["type"] == "error"
        assert end["status"] == 503
        assert "live relay (Redis) is unreachable" in end["message"]
        assert stream_reads_for(upstream, run_id) == []
    finally:
        await node.fanout.aclose()


async def test_a_leader_that_loses_its_lease_stops_publishing_and_nothing_is_doubled(
    upstream: Any, nodes: list[Node]
) -> None:
    a, b = nodes
    run_id, _ = upstream.trigger("external-writer", {})
    one = a.viewer(run_id, timeout=30)
    await wait_until(lambda: a.fanout.leaders(), 10)
    two = b.viewer(run_id, timeout=30)
    await asyncio.to_thread(append_parts, upstream, run_id, [f"s{i} " for i in range(10)])
    await wait_until(lambda: len(one.parts) == len(two.parts) == 10, 10)
    # As if a's process stalled past its lease and someone else took it meanwhile.
    relay = b.fanout.relay_for(OutputStream(run_id, "default"))
    await b.fanout.redis.set(relay.lease(ttl=LEASE).key, "thief", px=int(LEASE * 1000))
    await wait_until(lambda: not a.fanout.leaders(), 10)  # a's keeper noticed: a stopped
    # The thief's lease runs out; one of the two campaigns takes over and resumes.
    await wait_until(lambda: len(a.fanout.leaders() + b.fanout.leaders()) == 1, 10)
    await asyncio.to_thread(append_parts, upstream, run_id, [f"t{i} " for i in range(10)])
    expected = "".join(f"s{i} " for i in range(10)) + "".join(f"t{i} " for i in range(10))
    await wait_until(lambda: one.text == two.text == expected, 10)
    for viewer in (one, two):
        assert [p["id"] for p in viewer.parts] == [str(n) for n in range(20)]
    # Every part is in the relay once.
    cursors = [e.cursor.id for e in await relay.read(count=1000) if hasattr(e, "cursor")]
    assert cursors == [str(n) for n in range(20)]
    assert len(stream_reads_for(upstream, run_id)) == 2
    one.leave()
    two.leave()
