"""One viewer's cursor and flow control, and one socket's byte budget.

daphne's ``send`` never waits, so the consumer cannot see a slow browser; the browser acknowledges
what it has applied instead. A :class:`Subscription` counts what was queued or sent to its page
and not yet acknowledged, in parts (``MAX_UNACKED_PARTS``) and in bytes; an :class:`Outlet` (one
socket) caps the bytes of all its subscriptions together (``MAX_UNACKED_BYTES``). A subscription
without room gets nothing more from the hub until acknowledgements free some.

The page does not acknowledge every batch: the server marks a batch ``"ack": true`` when the page
should acknowledge it (after about a quarter of the part window, an eighth of the byte budget,
when the socket's budget is half used, or when the subscription has run out of room), and the page
acknowledges exactly those. Every batch sent while the budget is half used or more is marked, so
acknowledgements always free enough room for sending to go on.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from trigger_django.live.protocol import (
    MAX_PARTS_PER_FRAME,
    BadMessage,
    Position,
    cursor_position,
    parts_frame,
)

__all__ = ["FeedLink", "Outlet", "Segment", "State", "Subscription"]


class FeedLink(Protocol):
    """What a subscription needs of the feed it rides (``hub.Feed``)."""

    def catch_up(self, subscription: Subscription) -> None: ...

    def detach(self, subscription: Subscription) -> None: ...


@dataclass(slots=True)
class Segment:
    """Consecutive encoded parts of one feed. A segment published at the live edge is shared by
    every subscription that receives it and never changed; a catch-up segment belongs to one."""

    parts: list[str]
    size: int
    first: Position
    last: Position
    last_id: str
    #: Where a read must resume to get everything after ``last`` (see ``hub.Item.resume``).
    resume: str | None
    shared: bool = False
    _text: str | None = None

    @property
    def text(self) -> str:
        """The parts joined, computed once however many sockets send this segment."""
        if self._text is None:
            self._text = ",".join(self.parts)
        return self._text


class State(enum.Enum):
    #: Not yet attached to its feed.
    NEW = "new"
    #: At the live edge: receives each published batch at once.
    LIVE = "live"
    #: Detached from the live feed (out of room, or joined late); catches up from its position.
    BEHIND = "behind"
    #: Ended: the terminal message is queued or sent.
    DONE = "done"


class Subscription:
    """One viewer of one feed on one socket."""

    __slots__ = (
        "catchup",
        "feed",
        "in_flight",
        "last_sent",
        "outbox",
        "outlet",
        "position",
        "queued_parts",
        "queued_size",
        "requested_parts",
        "requested_size",
        "resume",
        "room",
        "started",
        "state",
        "sub_id",
        "terminal",
        "timeout",
        "timer",
        "unacked_parts",
        "unacked_size",
        "user_key",
    )

    def __init__(
        self,
        sub_id: str,
        outlet: Outlet,
        *,
        timeout: int,
        cursor: str | None = None,
        user_key: str = "",
    ) -> None:
        self.sub_id = sub_id
        self.outlet = outlet
        self.timeout = timeout
        self.user_key = user_key
        #: The last part given to this viewer (queued or sent), and where to resume after it.
        self.position: Position = cursor_position(cursor)
        self.resume: str | None = cursor
        self.state = State.NEW
        self.feed: FeedLink | None = None
        self.outbox: list[Segment] = []
        self.queued_parts = 0
        self.queued_size = 0
        #: Sent and not acknowledged: ``(last position, parts, bytes)`` per batch.
        self.in_flight: deque[tuple[Position, int, int]] = deque()
        self.unacked_parts = 0
        self.unacked_size = 0
        self.last_sent: Position | None = None
        self.requested_parts = 0
        self.requested_size = 0
        self.terminal: str | None = None
        self.started = 0.0
        #: The idle-timeout timer (a loop timer, not a task).
        self.timer: asyncio.TimerHandle | None = None
        #: Set when room frees up; only a catch-up read waits on it.
        self.room: asyncio.Event | None = None
        self.catchup: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<Subscription {self.sub_id} {self.state.value} at {self.position}>"

    # --- flow control --------------------------------------------------------------------------
    @property
    def outstanding_parts(self) -> int:
        return self.queued_parts + self.unacked_parts

    @property
    def outstanding_size(self) -> int:
        return self.queued_size + self.unacked_size

    def has_room(self) -> bool:
        outlet = self.outlet
        return (
            self.outstanding_parts < outlet.window_parts
            and outlet.outstanding_size < outlet.budget
            and not outlet.closed
        )

    def room_parts(self) -> int:
        return max(0, self.outlet.window_parts - self.outstanding_parts)

    def room_size(self) -> int:
        return max(0, self.outlet.budget - self.outlet.outstanding_size)

    def enqueue(self, segment: Segment) -> None:
        """Queue ``segment`` for the page; the caller checked :meth:`has_room`."""
        self.outbox.append(segment)
        count = len(segment.parts)
        self.queued_parts += count
        self.queued_size += segment.size
        self.outlet.outstanding_size += segment.size
        self.position = segment.last
        self.resume = segment.resume
        self.outlet.mark_dirty()

    def take(self) -> tuple[list[str], bool] | None:
        """The queued batches as encoded text, moved to in-flight; and whether to ask for an ack."""
        if not self.outbox:
            return None
        segments, self.outbox = self.outbox, []
        count, size = self.queued_parts, self.queued_size
        self.queued_parts = self.queued_size = 0
        self.unacked_parts += count
        self.unacked_size += size
        last = segments[-1].last
        self.in_flight.append((last, count, size))
        self.last_sent = last
        self.requested_parts += count
        self.requested_size += size
        outlet = self.outlet
        ask = (
            self.requested_parts * 4 >= outlet.window_parts
            or self.requested_size * 8 >= outlet.budget
            or outlet.outstanding_size * 2 >= outlet.budget
            or not self.has_room()
        )
        if ask:
            self.requested_parts = self.requested_size = 0
        return [segment.text for segment in segments], ask

    def acknowledge(self, cursor: str) -> None:
        """The page has applied every part up to and including ``cursor``."""
        position = cursor_position(cursor)
        if self.last_sent is None or position[:-1] > self.last_sent[:-1]:
            # An honest page acknowledges only what it received; anything else would reopen
            # the window without reading (and let a stalled socket buffer the whole stream).
            raise BadMessage(f"ack for cursor {cursor!r}, which was never sent")
        freed = 0
        while self.in_flight and self.in_flight[0][0] <= position:
            _, count, size = self.in_flight.popleft()
            self.unacked_parts -= count
            self.unacked_size -= size
            freed += size
        self.outlet.outstanding_size -= freed
        if freed or not self.in_flight:
            self.outlet.room_freed()

    def release(self) -> None:
        """Give back this subscription's share of the socket's budget (it is leaving)."""
        self.outlet.outstanding_size -= self.outstanding_size
        self.outbox.clear()
        self.in_flight.clear()
        self.queued_parts = self.queued_size = self.unacked_parts = self.unacked_size = 0
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def wake(self) -> None:
        if self.room is not None and self.has_room():
            self.room.set()

    def finish(self, message: str) -> None:
        """End this subscription with ``message`` (sent after the queued parts)."""
        if self.state is State.DONE:
            return
        self.state = State.DONE
        self.terminal = message
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.outlet.mark_dirty()


Sender = Callable[[str], Awaitable[None]]


@dataclass(eq=False)
class Outlet:
    """One socket as the hub sees it: its subscriptions, their shared byte budget, and how to
    send it a frame."""

    send: Sender
    window_parts: int
    budget: int
    #: Called when a subscription's queued parts and terminal message went out and it ended.
    on_finished: Callable[[Subscription], None]
    #: Schedules this outlet's flush (the hub's).
    schedule: Callable[[Outlet], None]
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    #: Control messages (``subscribed``, ``ticket``, refusals), sent before the parts.
    replies: list[str] = field(default_factory=list)
    outstanding_size: int = 0
    dirty: bool = False
    closed: bool = False

    def mark_dirty(self) -> None:
        if not self.dirty and not self.closed:
            self.dirty = True
            self.schedule(self)

    def room_freed(self) -> None:
        for subscription in list(self.subscriptions.values()):
            if subscription.state is State.BEHIND and subscription.feed is not None:
                subscription.feed.catch_up(subscription)
            subscription.wake()

    def messages(self) -> list[str]:
        """Everything queued on this socket, as frames: control replies, parts (coalesced
        across subscriptions, at most about ``MAX_PARTS_PER_FRAME`` per frame), then terminal
        messages."""
        self.dirty = False
        frames: list[str] = self.replies
        self.replies = []
        batches: list[tuple[str, list[str], bool]] = []
        count = 0
        finished: list[Subscription] = []
        for subscription in self.subscriptions.values():
            queued = subscription.queued_parts
            taken = subscription.take()
            if taken is not None:
                if batches and count + queued > MAX_PARTS_PER_FRAME:
                    frames.append(parts_frame(batches))
                    batches, count = [], 0
                batches.append((subscription.sub_id, taken[0], taken[1]))
                count += queued
            if subscription.terminal is not None:
                finished.append(subscription)
        if batches:
            frames.append(parts_frame(batches))
        for subscription in finished:
            assert subscription.terminal is not None
            frames.append(subscription.terminal)
            self.on_finished(subscription)
        return frames
