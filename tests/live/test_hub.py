"""The per-process hub: one upstream read per stream shared by every viewer, against a real
emulator, through real sockets and the real auth middleware."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.live.helpers import (
    collect,
    connect,
    consumer_tasks,
    feed_readers,
    no_feeds,
    parts_of,
    pool_busy,
    reads_from_the_start,
    stream_reads_for,
    subscribe_message,
    terminal,
    wait_until,
)
from trigger_django.live import hub as hub_module
from trigger_django.live.hub import get_hub
from trigger_django.upstream import aclose_http_clients

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
async def _close_shared_pool() -> AsyncIterator[None]:
    yield
    await aclose_http_clients()


def text_of(parts: list[dict[str, Any]]) -> str:
    return "".join(p["chunk"] for p in parts)


async def wait_for_parts(communicator: Any, count: int, sub: str = "s1") -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = []

    def enough(message: dict[str, Any]) -> bool:
        received.extend(parts_of([message], sub))
        return len(received) >= count

    await collect(communicator, until=enough, ack="requested")
    return received


async def test_two_viewers_on_two_sockets_share_one_upstream_read(upstream: Any, user: Any) -> None:
    chunks = [f"tok{i} " for i in range(60)]
    run_id, _ = upstream.trigger("echo-parts", {"parts": chunks, "delay_ms": 20})
    first, second = await connect(user), await connect(user)
    await first.send_json_to(subscribe_message(user, run_id, timeout=2))
    await second.send_json_to(subscribe_message(user, run_id, timeout=2))
    one, two = await asyncio.gather(
        collect(first, until=terminal(), ack="requested"),
        collect(second, until=terminal(), ack="requested"),
    )
    for messages in (one, two):
        assert messages[-1] == {"type": "complete", "sub": "s1"}
        assert text_of(parts_of(messages)) == "".join(chunks)
        assert [p["id"] for p in parts_of(messages)] == [str(n) for n in range(60)]
    assert len(reads_from_the_start(upstream, run_id)) == 1
    await first.disconnect()
    await second.disconnect()


async def test_a_late_joiner_and_a_resume_get_exactly_the_missing_parts(
    upstream: Any, user: Any
) -> None:
    chunks = [f"p{i} " for i in range(40)]
    run_id, _ = upstream.trigger("echo-parts", {"parts": chunks, "delay_ms": 30})
    first = await connect(user)
    await first.send_json_to(subscribe_message(user, run_id, timeout=2))
    early = await wait_for_parts(first, 10)
    # Joining mid-stream from the start, and resuming after part 5, on other sockets.
    late, resumed = await connect(user), await connect(user)
    await late.send_json_to(subscribe_message(user, run_id, timeout=2))
    await resumed.send_json_to(subscribe_message(user, run_id, timeout=2, cursor="5"))
    rest, from_start, after_five = await asyncio.gather(
        collect(first, until=terminal(), ack="requested"),
        collect(late, until=terminal(), ack="requested"),
        collect(resumed, until=terminal(), ack="requested"),
    )
    assert text_of(early + parts_of(rest)) == "".join(chunks)
    assert text_of(parts_of(from_start)) == "".join(chunks)
    assert [p["id"] for p in parts_of(after_five)] == [str(n) for n in range(6, 40)]
    # Everyone rode the first read (the replay buffer held what the others missed).
    assert len(reads_from_the_start(upstream, run_id)) == 1
    reads = stream_reads_for(upstream, run_id)
    assert not [r for r in reads if r["headers"].get("last-event-id") == "5"]
    for communicator in (first, late, resumed):
        await communicator.disconnect()


async def test_a_joiner_older_than_the_replay_buffer_reads_on_its_own_then_merges(
    upstream: Any, user: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr(hub_module, "REPLAY_PARTS", 5)
    chunks = [f"q{i} " for i in range(50)]
    run_id, _ = upstream.trigger("echo-parts", {"parts": chunks, "delay_ms": 30})
    first = await connect(user)
    await first.send_json_to(subscribe_message(user, run_id, timeout=2))
    early = await wait_for_parts(first, 20)
    late = await connect(user)
    await late.send_json_to(subscribe_message(user, run_id, timeout=2))
    rest, from_start = await asyncio.gather(
        collect(first, until=terminal(), ack="requested"),
        collect(late, until=terminal(), ack="requested"),
    )
    assert text_of(early + parts_of(rest)) == "".join(chunks)
    late_parts = parts_of(from_start)
    assert [p["id"] for p in late_parts] == [str(n) for n in range(50)]
    # Its own catch-up read, then the shared one: two reads, not one per part or per viewer.
    assert len(reads_from_the_start(upstream, run_id)) == 2
    await first.disconnect()
    await late.disconnect()


async def test_a_viewer_that_never_acks_does_not_delay_another_and_stays_bounded(
    upstream: Any, user: Any, settings: Any
) -> None:
    settings.TRIGGER_DJANGO = {**settings.TRIGGER_DJANGO, "MAX_UNACKED_PARTS": 8}
    chunks = [f"c{i} " for i in range(300)]
    run_id, _ = upstream.trigger("external-writer", {})
    stalled, reader = await connect(user), await connect(user)
    await stalled.send_json_to(subscribe_message(user, run_id, timeout=30))
    await reader.send_json_to(subscribe_message(user, run_id, timeout=30))
    for communicator in (stalled, reader):
        assert (await communicator.receive_json_from(timeout=5))["type"] == "subscribed"
    await asyncio.to_thread(append_parts, upstream, run_id, chunks)
    # The reading viewer gets everything while the other acknowledges nothing.
    assert text_of(await wait_for_parts(reader, 300)) == "".join(chunks)
    (feed,) = get_hub().feeds.values()
    stalled_sub = min(feed.subscriptions, key=lambda s: s.position)
    # Bounded: it holds its window of parts; the rest is in the feed's bounded buffer only.
    assert stalled_sub.outstanding_parts == 8
    assert len(feed.buffer) - feed.buffer_start <= hub_module.REPLAY_PARTS
    received: list[dict[str, Any]] = []
    while not await stalled.receive_nothing(timeout=0.2):
        received.extend(parts_of([await stalled.receive_json_from(timeout=1)]))
    assert [p["chunk"] for p in received] == chunks[:8]
    # Once it acknowledges, it catches up from its cursor to the exact text.
    await stalled.send_json_to({"type": "ack", "sub": "s1", "cursor": received[-1]["id"]})
    received += await wait_for_parts(stalled, 300 - 8)
    assert text_of(received) == "".join(chunks)
    assert len(reads_from_the_start(upstream, run_id)) == 1
    await stalled.disconnect()
    await reader.disconnect()


def append_parts(emulator: Any, run_id: str, chunks: list[str], key: str = "default") -> None:
    for chunk in chunks:
        response = emulator.client.post(
            f"/realtime/v1/streams/{run_id}/self/{key}/append", content=chunk.encode()
        )
        response.raise_for_status()


async def test_viewers_of_one_stream_keep_their_own_idle_timeouts(
    upstream: Any, user: Any, settings: Any
) -> None:
    # Idle timeouts of the hub itself: streams not following their run (FOLLOW_RUNS off).
    settings.TRIGGER_DJANGO = {**settings.TRIGGER_DJANGO, "FOLLOW_RUNS": False}
    run_id, _ = upstream.trigger("external-writer", {})
    short, long = await connect(user), await connect(user)
    await short.send_json_to(subscribe_message(user, run_id, timeout=1))
    await long.send_json_to(subscribe_message(user, run_id, timeout=3))
    for communicator in (short, long):
        assert (await communicator.receive_json_from(timeout=5))["type"] == "subscribed"
    await asyncio.to_thread(append_parts, upstream, run_id, ["one"])
    assert parts_of(await collect(short, until=terminal(), limit=10))[0]["chunk"] == "one"
    # The longer timeout is still live after the short one completed ...
    assert (await long.receive_json_from(timeout=5))["type"] == "parts"
    await asyncio.to_thread(append_parts, upstream, run_id, ["two"])
    messages = await collect(long, until=terminal(), limit=15)
    assert [p["chunk"] for p in parts_of(messages)] == ["two"]
    assert messages[-1] == {"type": "complete", "sub": "s1"}
    await short.disconnect()
    await long.disconnect()


async def test_the_last_viewer_leaving_closes_the_upstream_read(
    upstream: Any, user: Any, settings: Any
) -> None:
    # Idle timeouts of the hub itself: streams not following their run (FOLLOW_RUNS off).
    settings.TRIGGER_DJANGO = {**settings.TRIGGER_DJANGO, "FOLLOW_RUNS": False}
    run_id, _ = upstream.trigger("external-writer", {})
    sockets = [await connect(user) for _ in range(3)]
    for communicator in sockets:
        await communicator.send_json_to(subscribe_message(user, run_id, timeout=60))
        assert (await communicator.receive_json_from(timeout=5))["type"] == "subscribed"
    await wait_until(lambda: pool_busy() == 1)
    assert feed_readers() == {f"trigger_django:feed:stream/{run_id}/default"}
    await sockets[0].send_json_to({"type": "unsubscribe", "sub": "s1"})
    await sockets[1].disconnect()
    assert feed_readers(), "two viewers left, one remains: the read goes on"
    await sockets[2].disconnect()
    await wait_until(lambda: consumer_tasks() == [] and no_feeds() and pool_busy() == 0)
    assert len(reads_from_the_start(upstream, run_id)) == 1
    await sockets[0].disconnect()


async def test_a_shorter_timeout_joining_a_longer_read_completes_on_its_own_clock(
    upstream: Any, user: Any, settings: Any
) -> None:
    # Idle timeouts of the hub itself: streams not following their run (FOLLOW_RUNS off).
    settings.TRIGGER_DJANGO = {**settings.TRIGGER_DJANGO, "FOLLOW_RUNS": False}
    run_id, _ = upstream.trigger("external-writer", {})
    long, short = await connect(user), await connect(user)
    await long.send_json_to(subscribe_message(user, run_id, timeout=30))
    assert (await long.receive_json_from(timeout=5))["type"] == "subscribed"
    await short.send_json_to(subscribe_message(user, run_id, timeout=1))
    assert (await short.receive_json_from(timeout=5))["type"] == "subscribed"
    await asyncio.to_thread(append_parts, upstream, run_id, ["x"])
    messages = await collect(short, until=terminal(), limit=10)
    assert [p["chunk"] for p in parts_of(messages)] == ["x"]
    assert messages[-1] == {"type": "complete", "sub": "s1"}
    # The read, and the longer viewer, go on.
    assert [p["chunk"] for p in parts_of([await long.receive_json_from(timeout=5)])] == ["x"]
    assert await long.receive_nothing(timeout=0.3)
    assert len(reads_from_the_start(upstream, run_id)) == 1
    await long.disconnect()
    await short.disconnect()


async def test_a_page_acknowledges_a_few_times_per_window_not_per_batch(
    upstream: Any, user: Any, settings: Any
) -> None:
    settings.TRIGGER_DJANGO = {**settings.TRIGGER_DJANGO, "MAX_UNACKED_PARTS": 400}
    chunks = [f"a{i} " for i in range(2000)]
    run_id, _ = upstream.trigger("echo-parts", {"parts": chunks, "delay_ms": 1})
    communicator = await connect(user)
    await communicator.send_json_to(subscribe_message(user, run_id, timeout=2))
    messages = await collect(communicator, until=terminal(), ack="requested", limit=30)
    assert text_of(parts_of(messages)) == "".join(chunks)
    batches = [b for m in messages if m["type"] == "parts" for b in m["streams"]]
    asked = [b for b in batches if b.get("ack")]
    # About one acknowledgement per quarter window (100 parts), however many batches there
    # were; at most twice that when the page lags and the window fills (one more when out of
    # room), never one per batch or per part.
    assert 1 <= len(asked) <= 2 * 2000 / 100
    await communicator.disconnect()


async def test_a_transformed_read_closed_between_items_closes_its_base_read() -> None:
    # A catch-up read that merges into the live feed stops between items: its transform (a
    # plain `async for`, like the part templates') must not leave the upstream read open.
    from trigger_django.live.hub import Item, Transformed

    closed = asyncio.Event()

    class Base:
        key = ("stream", "run_1", "default")

        async def open(self, resume: str | None, idle_timeout: int) -> AsyncIterator[Item]:
            try:
                for n in range(1, 1000):
                    data = f'{{"id":"{n}"}}'
                    yield Item((n,), str(n), data, len(data), str(n))
                    await asyncio.sleep(0)
            finally:
                closed.set()

        def describe_error(self, exc: BaseException) -> tuple[int, str]:
            return 500, str(exc)

    async def passthrough(items: AsyncIterator[Item]) -> AsyncIterator[Item]:
        async for item in items:
            yield item

    reads = Transformed(Base(), "passthrough", passthrough).open(None, 60)
    assert (await anext(reads)).id == "1"
    await reads.aclose()  # type: ignore[attr-defined]
    assert closed.is_set()
