"""The per-process hub: one upstream reader per feed, shared by every subscription in the process.

A *feed* is anything that yields an ordered sequence of parts with resumable cursors, named by a
tuple key (``("stream", run_id, key)`` for an output stream). Its :class:`Source` opens a read
that resumes after a cursor; the hub runs one such read per feed and process (the *reader*),
decodes and encodes each part once, and publishes batches of parts (a leading-edge throttle of
``THROTTLE_MS``) to every subscription at the live edge, as one shared :class:`Segment`.

* A subscription that joins late, or resumes from a cursor, catches up from the feed's bounded
  replay buffer; when its cursor is older than the buffer, it reads from the source on its own
  (its *catch-up read*) until its cursor reaches the buffer, then rides the shared feed.
* A subscription without room (its page has not acknowledged enough) is detached from the live
  feed and catches up from its cursor when acknowledgements free room: a slow viewer never slows
  the others, and holds no more than its window.
* The reader only waits for its viewers when none of them is at the live edge and the replay
  buffer is full (then TCP pushes back upstream).
* When the last subscription leaves, the reader is stopped after ``linger`` seconds (a viewer
  reconnecting in the meantime rides the same read).

Plugging in another feed: implement :class:`Source` (``key``, ``open(resume, timeout)`` yielding
:class:`Item` objects in position order, ``describe_error(exc)``) and pass it to
:meth:`Hub.subscribe`. A source that relays from elsewhere (another process, through Redis)
is a ``Source`` too. A transform applied once per feed (for example server-side rendering) is a
source wrapping another one: :class:`Transformed`.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass
from typing import Protocol

from trigger_django.client import TriggerError
from trigger_django.conf import get_config
from trigger_django.live.protocol import (
    MAX_PARTS_PER_FRAME,
    Position,
    complete_message,
    error_message,
)
from trigger_django.live.subscription import Outlet, Segment, State, Subscription
from trigger_django.upstream import UpstreamConfigurationError

__all__ = [
    "FEED_LINGER_SECONDS",
    "REPLAY_BYTES",
    "REPLAY_PARTS",
    "Feed",
    "Hub",
    "Item",
    "Source",
    "Transformed",
    "get_hub",
]

logger = logging.getLogger(__name__)

#: Parts and bytes a feed keeps for late joiners and viewers catching up.
REPLAY_PARTS = 2048
REPLAY_BYTES = 1024 * 1024
#: A published batch holds at most this many bytes (and ``MAX_PARTS_PER_FRAME`` parts).
MAX_BATCH_BYTES = 256 * 1024
#: Seconds a feed's reader outlives its last subscription.
FEED_LINGER_SECONDS = 1.0

FeedKey = tuple[Hashable, ...]


@dataclass(slots=True)
class Item:
    """One part of a feed, decoded and encoded once."""

    #: Total order within the feed (``protocol.Position``).
    position: Position
    #: The cursor the page sees and acknowledges.
    id: str
    #: The part as it appears in a ``parts`` frame.
    data: str
    size: int
    #: A read opened after this cursor yields everything after this item (and perhaps this
    #: item and some before it again, which positions filter out): the item's own id on v2
    #: streams, the entry before it on v1 streams (one v1 entry can hold several parts).
    resume: str | None


class Source(Protocol):
    """Where a feed's parts come from."""

    @property
    def key(self) -> FeedKey: ...

    def open(self, resume: str | None, idle_timeout: int) -> AsyncIterator[Item]:
        """Read after ``resume`` (``None``: from the feed's start), in position order. End when
        the source has been idle for ``idle_timeout`` seconds; raise for a terminal failure."""
        ...

    def describe_error(self, exc: BaseException) -> tuple[int, str]:
        """``(status, message)`` of the in-band ``error`` for a failed read."""
        ...


Transform = Callable[[AsyncIterator[Item]], AsyncIterator[Item]]


class Transformed:
    """A source whose items pass through ``transform`` (once per feed read, not per viewer).

    ``transform`` receives the base source's items and yields the transformed ones, keeping
    positions and resume cursors meaningful for the base source."""

    def __init__(self, base: Source, name: str, transform: Transform) -> None:
        self.base = base
        self.name = name
        self.transform = transform

    @property
    def key(self) -> FeedKey:
        return (*self.base.key, self.name)

    async def open(self, resume: str | None, idle_timeout: int) -> AsyncIterator[Item]:
        # Closed, the transform must close the base read too: a transform that is a plain
        # `async for` would leave it suspended, its upstream request open for nobody.
        items = self.base.open(resume, idle_timeout)
        async with contextlib.aclosing(items):  # type: ignore[type-var]
            transformed = self.transform(items)
            async with contextlib.aclosing(transformed):  # type: ignore[type-var]
                async for item in transformed:
                    yield item

    def describe_error(self, exc: BaseException) -> tuple[int, str]:
        return self.base.describe_error(exc)


class Feed:
    """One shared read of a source, and the subscriptions riding it."""

    def __init__(self, hub: Hub, source: Source, start: Subscription) -> None:
        self.hub = hub
        self.source = source
        self.key = source.key
        self.subscriptions: set[Subscription] = set()
        self.live: set[Subscription] = set()
        #: Published items kept for catching up: ``buffer[start:]``.
        self.buffer: list[Item] = []
        self.buffer_start = 0
        self.buffer_size = 0
        #: Every item after ``base`` is in the buffer or still to come.
        self.base: Position = start.position
        #: Position of the last published item (or ``base``).
        self.head: Position = start.position
        #: Arrived, not yet published.
        self.pending: list[Item] = []
        self.pending_size = 0
        self.last_position: Position = start.position
        self.read_resume: str | None = start.resume
        self.read_timeout = start.timeout
        self.last_arrival = self.read_opened = hub.loop.time()
        self.last_publish = float("-inf")
        self.publish_handle: asyncio.TimerHandle | None = None
        self.linger_handle: asyncio.TimerHandle | None = None
        #: The terminal message text builder once the read ended, by subscription id.
        self.ended: Callable[[str], str] | None = None
        self.unpaused = asyncio.Event()
        self.reader: asyncio.Task[None] = hub.loop.create_task(
            self._read(), name=f"trigger_django:feed:{'/'.join(map(str, self.key))}"
        )

    def __repr__(self) -> str:
        return f"<Feed {self.key} head={self.head} subscriptions={len(self.subscriptions)}>"

    # --- subscriptions --------------------------------------------------------------------------
    def attach(self, subscription: Subscription) -> None:
        if self.linger_handle is not None:
            self.linger_handle.cancel()
            self.linger_handle = None
        subscription.feed = self
        subscription.started = self.hub.loop.time()
        self.subscriptions.add(subscription)
        subscription.state = State.BEHIND
        self._arm_timer(subscription, subscription.timeout)
        self.catch_up(subscription)

    def detach(self, subscription: Subscription) -> None:
        self.subscriptions.discard(subscription)
        self.live.discard(subscription)
        subscription.release()
        if subscription.catchup is not None:
            subscription.catchup.cancel()
        self.unpaused.set()
        if not self.subscriptions:
            if self.reader.done():
                self.hub.forget(self)
            elif self.linger_handle is None:
                self.linger_handle = self.hub.loop.call_later(self.hub.linger, self.close)

    def close(self) -> None:
        """Stop the reader (its last subscription left and nobody came back)."""
        self.linger_handle = None
        if self.subscriptions:
            return
        self.hub.forget(self)
        self.reader.cancel()

    def catch_up(self, subscription: Subscription) -> None:
        """Give a detached subscription what it missed, as far as its room allows; at the head,
        put it back on the live feed."""
        while subscription.state is State.BEHIND and subscription.has_room():
            if subscription.position >= self.head:
                if self.ended is not None and not self.pending:
                    subscription.finish(self.ended(subscription.sub_id))
                    return
                subscription.state = State.LIVE
                self.live.add(subscription)
                self.unpaused.set()
                return
            if subscription.position < self.base:
                if subscription.catchup is None:
                    subscription.catchup = self.hub.loop.create_task(
                        self._catch_up_read(subscription),
                        name=f"trigger_django:catchup:{subscription.sub_id}",
                    )
                return
            buffer = self.buffer
            lo = bisect.bisect_right(
                buffer, subscription.position, lo=self.buffer_start, key=_position
            )
            end, size = _fit(
                buffer,
                lo,
                len(buffer),
                min(subscription.room_parts(), MAX_PARTS_PER_FRAME),
                subscription.room_size(),
            )
            subscription.enqueue(_segment(buffer[lo:end], size))

    # --- the shared read ------------------------------------------------------------------------
    async def _read(self) -> None:
        timeout = self.read_timeout
        try:
            while True:
                items = self.source.open(self.read_resume, timeout)
                self.read_opened = self.hub.loop.time()
                async with contextlib.aclosing(items):  # type: ignore[type-var]
                    async for item in items:
                        if item.position <= self.last_position:
                            continue  # re-sent after a reconnect
                        self._accept(item)
                        while self._must_pause():
                            self.unpaused.clear()
                            await self.unpaused.wait()
                # The source went idle for `timeout`: every viewer with that timeout or less
                # completes; a longer one keeps the read going.
                longer = [
                    s.timeout
                    for s in self.subscriptions
                    if s.timeout > timeout and s.state is not State.DONE
                ]
                if not longer:
                    break
                for subscription in list(self.subscriptions):
                    if subscription.timeout <= timeout:
                        self._idle_end(subscription, force=True)
                timeout = self.read_timeout = max(longer)
            self._end(lambda sub: complete_message(sub))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            status, message = self.source.describe_error(exc)
            if status >= 500 and not isinstance(exc, _EXPECTED):
                logger.exception("trigger_django: feed %s failed", self.key)
            self._end(lambda sub: error_message(sub, status, message))

    def _must_pause(self) -> bool:
        return (
            not self.live
            and self.ended is None
            and (
                len(self.buffer) - self.buffer_start + len(self.pending) >= REPLAY_PARTS
                or self.buffer_size + self.pending_size >= REPLAY_BYTES
            )
        )

    def _accept(self, item: Item) -> None:
        self.last_position = item.position
        self.read_resume = item.resume
        self.pending.append(item)
        self.pending_size += item.size
        loop = self.hub.loop
        now = self.last_arrival = loop.time()
        if len(self.pending) >= MAX_PARTS_PER_FRAME or self.pending_size >= MAX_BATCH_BYTES:
            self.publish()
        elif self.publish_handle is None:
            # Leading edge: publish at once when the last batch is older than the window;
            # otherwise everything arriving until the window ends goes in one batch.
            delay = self.last_publish + self.hub.throttle - now
            if delay <= 0:
                self.publish()
            else:
                self.publish_handle = loop.call_later(delay, self.publish)

    def publish(self) -> None:
        if self.publish_handle is not None:
            self.publish_handle.cancel()
            self.publish_handle = None
        batch = self.pending
        if not batch:
            return
        self.last_publish = self.hub.loop.time()
        size = self.pending_size
        self.pending = []
        self.pending_size = 0
        segment = _segment(batch, size, shared=True)
        self.buffer.extend(batch)
        self.buffer_size += size
        self._evict()
        self.head = segment.last
        for subscription in list(self.live):
            if subscription.position >= segment.last:
                continue  # resumed ahead of this read
            if not subscription.has_room():
                # Detached: it catches up from its cursor when acknowledgements free room.
                self.live.discard(subscription)
                subscription.state = State.BEHIND
                continue
            room_parts, room_size = subscription.room_parts(), subscription.room_size()
            if (
                subscription.position < segment.first
                and len(batch) <= room_parts
                and size <= room_size
            ):
                subscription.enqueue(segment)
                continue
            # Resumed inside this batch, or room for only part of it: its own slice, and
            # past its room it is detached until acknowledgements free some.
            lo = bisect.bisect_right(batch, subscription.position, key=_position)
            end, own_size = _fit(batch, lo, len(batch), room_parts, room_size)
            subscription.enqueue(_segment(batch[lo:end], own_size))
            if end < len(batch):
                self.live.discard(subscription)
                subscription.state = State.BEHIND
        if self.ended is not None:
            self._finish_live()

    def _evict(self) -> None:
        buffer = self.buffer
        start = self.buffer_start
        while len(buffer) - start > REPLAY_PARTS or (
            self.buffer_size > REPLAY_BYTES and len(buffer) - start > 1
        ):
            item = buffer[start]
            start += 1
            self.buffer_size -= item.size
            self.base = item.position
        # Evicted items are still referenced until the list is compacted: compact as soon as
        # they are half of it (amortised O(1) per item, memory at most twice the window).
        if start > 16 and start * 2 > len(buffer):
            del buffer[:start]
            start = 0
        self.buffer_start = start

    def _end(self, message: Callable[[str], str]) -> None:
        self.ended = message
        self.publish()
        self.hub.forget(self)
        self.unpaused.set()
        self._finish_live()

    def _finish_live(self) -> None:
        assert self.ended is not None
        for subscription in list(self.live):
            if subscription.position >= self.head and subscription.state is State.LIVE:
                self.live.discard(subscription)
                subscription.finish(self.ended(subscription.sub_id))

    # --- per-subscription idle timeouts -------------------------------------------------------
    def _arm_timer(self, subscription: Subscription, delay: float) -> None:
        subscription.timer = self.hub.loop.call_later(delay, self._idle_end, subscription, False)

    def _idle_end(self, subscription: Subscription, force: bool) -> None:
        """Complete a viewer whose stream was idle for its timeout, as the upstream server ends
        a read idle for ``Timeout-Seconds``. A viewer whose timeout is the read's (or longer)
        is completed by the read's end itself, so the server's clock decides, as with a read
        of its own; this timer only ends viewers with a shorter timeout than the read's."""
        subscription.timer = None
        if subscription.state is State.DONE or subscription not in self.subscriptions:
            return
        if not force and subscription.timeout >= self.read_timeout:
            self._arm_timer(subscription, subscription.timeout)
            return
        now = self.hub.loop.time()
        deadline = (
            max(subscription.started, self.last_arrival, self.read_opened) + subscription.timeout
        )
        caught_up = (
            subscription.state is State.LIVE
            and not self.pending
            and subscription.position >= self.head
        )
        allowed = getattr(self.source, "idle_end_allowed", None)
        if caught_up and allowed is not None and not allowed():
            # The source says it is not over (a stream whose run still runs): wait on.
            self._arm_timer(subscription, subscription.timeout)
            return
        if caught_up and (force or now >= deadline - 0.001):
            self.live.discard(subscription)
            subscription.finish(complete_message(subscription.sub_id))
        elif not force:
            # Not idle: still catching up, or parts came in since it was armed.
            delay = deadline - now if caught_up or deadline > now else subscription.timeout
            self._arm_timer(subscription, max(delay, 0.05))

    # --- a subscription's own catch-up read ---------------------------------------------------
    async def _catch_up_read(self, subscription: Subscription) -> None:
        try:
            merged = False
            items = self.source.open(subscription.resume, subscription.timeout)
            async with contextlib.aclosing(items):  # type: ignore[type-var]
                async for item in items:
                    if item.position <= subscription.position:
                        continue
                    while not subscription.has_room():
                        if subscription.room is None:
                            subscription.room = asyncio.Event()
                        subscription.room.clear()
                        await subscription.room.wait()
                    if subscription.state is not State.BEHIND:
                        return
                    subscription.enqueue(_segment([item], item.size))
                    if subscription.position >= self.base:
                        merged = True
                        break
            if not merged and subscription.position >= self.head and self.ended is None:
                # The source was idle for this viewer's timeout: it completes.
                subscription.finish(complete_message(subscription.sub_id))
                return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            status, message = self.source.describe_error(exc)
            subscription.finish(error_message(subscription.sub_id, status, message))
            return
        finally:
            subscription.catchup = None
            subscription.room = None
        self.catch_up(subscription)


def _fit(items: list[Item], lo: int, hi: int, parts: int, size: int) -> tuple[int, int]:
    """``(end, bytes)`` of the longest run ``items[lo:end]`` within ``parts`` and ``size``
    (at least one item, however large: a part bigger than the budget still goes, alone)."""
    hi = min(hi, lo + max(parts, 1))
    total = 0
    end = lo
    while end < hi and (end == lo or total + items[end].size <= size):
        total += items[end].size
        end += 1
    return end, total


def _position(item: Item) -> Position:
    return item.position


def _segment(items: list[Item], size: int, *, shared: bool = False) -> Segment:
    last = items[-1]
    return Segment(
        [item.data for item in items],
        size,
        items[0].position,
        last.position,
        last.id,
        last.resume,
        shared=shared,
    )


#: Failures that are the upstream's, reported in-band without a traceback in the log.
_EXPECTED = (TriggerError, UpstreamConfigurationError)


class Hub:
    """The feeds of one event loop (a daphne process has one), and the flushing of sockets."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, throttle: float) -> None:
        self.loop = loop
        self.throttle = throttle
        self.linger = FEED_LINGER_SECONDS
        self.feeds: dict[FeedKey, Feed] = {}
        self._dirty: list[Outlet] = []
        self._flusher: asyncio.Task[None] | None = None

    def subscribe(self, source: Source, subscription: Subscription) -> Feed:
        """Attach ``subscription`` to the feed of ``source``, starting it if needed."""
        feed = self.feeds.get(source.key)
        if feed is None or feed.ended is not None:
            feed = self.feeds[source.key] = Feed(self, source, subscription)
        feed.attach(subscription)
        return feed

    def leave(self, subscription: Subscription) -> None:
        if subscription.feed is not None:
            subscription.feed.detach(subscription)
        else:
            subscription.release()

    def forget(self, feed: Feed) -> None:
        if self.feeds.get(feed.key) is feed:
            del self.feeds[feed.key]

    def readers(self) -> list[asyncio.Task[None]]:
        return [feed.reader for feed in self.feeds.values()]

    # --- sending ------------------------------------------------------------------------------
    def schedule(self, outlet: Outlet) -> None:
        self._dirty.append(outlet)
        if self._flusher is None:
            self._flusher = self.loop.create_task(self._flush(), name="trigger_django:flush")

    async def _flush(self) -> None:
        sent = 0
        try:
            while self._dirty:
                outlets, self._dirty = self._dirty, []
                for outlet in outlets:
                    if outlet.closed:
                        continue
                    for message in outlet.messages():
                        try:
                            await outlet.send(message)
                        except Exception:
                            logger.exception("trigger_django: sending to a socket failed")
                            outlet.closed = True
                            break
                        sent += 1
                        if sent % 64 == 0:
                            # daphne's send never suspends: give the loop a turn.
                            await asyncio.sleep(0)
        finally:
            self._flusher = None


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def get_hub() -> Hub:
    """The hub of the running event loop."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub(loop, throttle=get_config().throttle_ms / 1000)
    hub.throttle = get_config().throttle_ms / 1000
    return hub
