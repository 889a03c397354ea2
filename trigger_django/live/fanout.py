"""Cross-process fan-out (``TRIGGER_DJANGO["FANOUT"]``, issue 9): one upstream reader per
(run, stream) for the whole cluster, as a hub :class:`~trigger_django.live.hub.Source`.

:class:`FanoutSource` wraps the per-process :class:`~trigger_django.live.sources.OutputStream`:

* **Every process follows the relay.** ``open(resume, idle_timeout)`` reads the stream's Redis
  Streams relay (:mod:`trigger_django.live.redis_feed`) from its start, skipping the parts at or
  before ``resume``, and yields :class:`~trigger_django.live.hub.Item` objects identical to what
  ``OutputStream`` yields (same position, id, encoded data and resume cursor), so the hub, the
  page's de-duplication and its cursors work unchanged.
* **One process leads.** While a process has an open follower of a relay it *campaigns*: it waits
  for the relay's lease (``Lease.wait_acquire``, polling every quarter of ``LEASE_SECONDS``), and
  whoever holds it keeps it renewed (``LeaseKeeper``), reads upstream through ``OutputStream`` and
  publishes what arrives, a batch per publish, to the relay. When the leaseholder dies, its lease
  expires and a campaigning process takes over within ``LEASE_SECONDS`` (plus one poll),
  resuming upstream from the relay's tail: after the entry before the last published one, so a
  v1 entry the old leader published only partly is completed, and skipping every part up to the
  last published cursor (no gap, no duplicate). A leader whose last local follower closes
  releases the lease after a short linger (``CAMPAIGN_LINGER_SECONDS``), so another process still
  following takes over on its next poll.
* **Idle timeout.** Upstream ends a read only after it was idle for ``Timeout-Seconds``; that is
  not the end of the stream. So the leader re-opens upstream from its cursor while its process
  still follows (and stops when it no longer does), and never publishes ``complete`` for
  idleness: each follower ends by itself when the relay brought nothing for its
  ``idle_timeout`` (what the upstream read does), and the hub completes its viewers as without
  fan-out. Viewers with different timeouts in different processes each keep their own. The first
  idle period is longer by ``LEASE_SECONDS`` (electing a leader and connecting upstream), and a
  follower whose time is up while nobody holds the lease (a handoff) waits for the next leader.
* **Terminal errors** (a run or stream that does not exist, refused authorisation) go through the
  relay's end marker: the leader publishes ``error`` with the status and message the viewers of
  the non-fanout path would get, every follower raises :class:`RelayedError` and the hub sends
  that same in-band error. A follower opened *after* an end marker ignores it (the read it ends
  was not its own) and a campaign started for it re-opens the relay after the marker, continuing
  from the last cursor, as a new subscribe re-reads upstream without fan-out.
* **Late joiners and gaps.** The relay keeps ``MAXLEN`` entries; a follower whose cursor is older
  than the oldest one reads upstream on its own from its cursor until it reaches the relay's
  oldest part, then follows the relay again (as the hub's catch-up reads do).

Parts whose upstream id is not a cursor (a v1 event without ``id:``) cannot be relayed by cursor:
the leader ends the relay with a 502 error for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import weakref
from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from trigger_django.client import TriggerError
from trigger_django.live.hub import Item, Source
from trigger_django.live.protocol import AFTER_ALL, cursor_key, is_cursor
from trigger_django.live.redis_feed import (
    CONNECTION_ERRORS,
    Cursor,
    Lease,
    LeaseKeeper,
    LeaseLost,
    RelayConflict,
    RelayEnd,
    RelayError,
    RelayGap,
    RelayPart,
    RelayPublisher,
    ResumePoint,
    StreamRelay,
    _decode,
    _text,
    connect,
)
from trigger_django.live.sources import OutputStream

__all__ = ["Fanout", "FanoutSource", "RelayedError", "fanout_source", "get_fanout"]

logger = logging.getLogger(__name__)

#: Seconds of one blocking relay read (below the connections' 30 s read timeout).
FOLLOW_BLOCK = 5.0
#: Parts per publish call, and parts read upstream but not yet published before the read waits.
PUBLISH_BATCH = 256
OUTBOX_LIMIT = 4096
#: Seconds a campaign outlives its process's last follower of the relay.
CAMPAIGN_LINGER_SECONDS = 0.5
#: An upstream read that ended sooner than this (seconds) is re-opened only after a pause.
MIN_READ_SECONDS = 1.0


class RelayedError(RelayError, TriggerError):
    """The leader's upstream read failed for good: the status and message it published (an
    upstream answer, like the client's own errors, hence a ``TriggerError`` too)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(eq=False)
class _Campaign:
    """This process's bid to read one relay upstream, alive while something here follows it."""

    relay: StreamRelay
    base: OutputStream
    #: Idle timeouts of the open followers in this process.
    followers: list[int] = field(default_factory=list)
    #: The newest end marker a follower saw as the relay's tail when it opened: a campaign
    #: re-opens the relay after that marker (it was not the end of those followers' read).
    reopen_after: str | None = None
    task: asyncio.Task[None] | None = None
    leading: bool = False
    linger: asyncio.TimerHandle | None = None


class Fanout:
    """The fan-out of one event loop (a daphne process has one): its Redis client and campaigns."""

    def __init__(
        self,
        redis: Redis,
        *,
        lease_seconds: float = 5.0,
        maxlen: int = 10_000,
        retention: float = 3600.0,
        prefix: str = "trigger_django:",
        url: str = "",
    ) -> None:
        self.redis = redis
        self.url = url
        self.lease_seconds = lease_seconds
        self.maxlen = maxlen
        self.retention = retention
        self.prefix = prefix
        self.campaigns: dict[str, _Campaign] = {}

    def source(self, base: OutputStream) -> FanoutSource:
        return FanoutSource(base, self)

    def relay_for(self, base: OutputStream) -> StreamRelay:
        # A start_index view is a different upstream read, so a different relay ('|' is not in
        # the stream key alphabet).
        key = (
            base.stream_key if base.start_index is None else f"{base.stream_key}|{base.start_index}"
        )
        return StreamRelay(
            self.redis,
            base.run_id,
            key,
            maxlen=self.maxlen,
            retention=self.retention,
            prefix=self.prefix,
        )

    def leaders(self) -> list[str]:
        """The relays this process reads upstream now (their stream keys in Redis)."""
        return [name for name, campaign in self.campaigns.items() if campaign.leading]

    async def aclose(self) -> None:
        """Stop every campaign (releasing held leases) and close the Redis client."""
        for campaign in self.campaigns.values():
            if campaign.linger is not None:
                campaign.linger.cancel()
        tasks = [c.task for c in self.campaigns.values() if c.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.campaigns.clear()
        await self.redis.aclose()

    # --- campaigns ------------------------------------------------------------------------------
    def join(
        self, base: OutputStream, relay: StreamRelay, idle_timeout: int, ended: str | None
    ) -> _Campaign:
        campaign = self.campaigns.get(relay.stream_key)
        if campaign is None:
            campaign = self.campaigns[relay.stream_key] = _Campaign(relay, base)
        campaign.followers.append(idle_timeout)
        if campaign.linger is not None:
            campaign.linger.cancel()
            campaign.linger = None
        if ended is not None and (
            campaign.reopen_after is None or _id_key(ended) > _id_key(campaign.reopen_after)
        ):
            campaign.reopen_after = ended
        if campaign.task is None or campaign.task.done():
            campaign.task = asyncio.get_running_loop().create_task(
                self._campaign(campaign), name=f"trigger_django:fanout:{relay.stream_key}"
            )
        return campaign

    def leave(self, campaign: _Campaign, idle_timeout: int) -> None:
        campaign.followers.remove(idle_timeout)
        if not campaign.followers and campaign.linger is None:
            # A short linger: the hub re-opening its read (or a viewer coming back at once)
            # keeps the campaign, and the lease, instead of handing them round.
            campaign.linger = asyncio.get_running_loop().call_later(
                CAMPAIGN_LINGER_SECONDS, self._retire, campaign
            )

    def _retire(self, campaign: _Campaign) -> None:
        campaign.linger = None
        if campaign.followers:
            return
        if self.campaigns.get(campaign.relay.stream_key) is campaign:
            del self.campaigns[campaign.relay.stream_key]
        if campaign.task is not None:
            campaign.task.cancel()  # the keeper releases a held lease on the way out

    async def _campaign(self, campaign: _Campaign) -> None:
        relay = campaign.relay
        # The token names the process (for operators, and the tests' SIGKILL of the holder).
        token = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(8)}"
        lease = relay.lease(ttl=self.lease_seconds, token=token, prefix=self.prefix)
        while True:
            await lease.wait_acquire()
            ended: str | None = None
            try:
                async with lease.kept() as keeper:
                    campaign.leading = True
                    ended = await self._lead(campaign, lease, keeper)
            except (LeaseLost, RelayConflict) as exc:
                logger.info("trigger_django: fan-out %s: %s", relay.stream_key, exc)
            except CONNECTION_ERRORS as exc:
                logger.warning("trigger_django: fan-out %s: Redis: %s", relay.stream_key, exc)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug: campaign again later rather than leave this process's viewers without
                # a reader (the lease was released on the way out).
                logger.exception("trigger_django: fan-out %s: the leader failed", relay.stream_key)
                await asyncio.sleep(self.lease_seconds)
            finally:
                campaign.leading = False
            # The relay ended (an error marker): the read of this process's followers is over,
            # unless one opened after that marker meanwhile (no await between this check and
            # the return: a later follower finds this task done and starts a new campaign).
            if ended is not None and (
                campaign.reopen_after is None or _id_key(campaign.reopen_after) < _id_key(ended)
            ):
                return

    async def _lead(self, campaign: _Campaign, lease: Lease, keeper: LeaseKeeper) -> str:
        """Read upstream and publish as the leaseholder until the lease is lost (raises) or the
        relay ended: the id of its end marker."""
        relay = campaign.relay
        tail = await relay.resume_point()
        if tail.end is not None:
            if campaign.reopen_after is None or _id_key(tail.end.entry_id) > _id_key(
                campaign.reopen_after
            ):
                return tail.end.entry_id  # it ended after our followers opened: they end too
            tail = ResumePoint(tail.entry_id, None, None)
        last = await _last_part(relay, tail.entry_id)
        resume, skip = await _upstream_resume(relay, last)
        publisher = relay.publisher(lease, ResumePoint(tail.entry_id, skip, None))
        work = asyncio.ensure_future(self._read_and_publish(campaign, publisher, resume, skip))
        lost = asyncio.ensure_future(keeper.lost.wait())
        try:
            await asyncio.wait({work, lost}, return_when=asyncio.FIRST_COMPLETED)
            if work.done():
                return work.result()
            raise LeaseLost(f"The lease {lease.key} ran out before it could be renewed.")
        finally:
            for task in (work, lost):
                task.cancel()
            for task in (work, lost):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _read_and_publish(
        self,
        campaign: _Campaign,
        publisher: RelayPublisher,
        resume: str | None,
        skip: Cursor | None,
    ) -> str:
        loop = asyncio.get_running_loop()
        outbox = _Outbox()
        sender = asyncio.ensure_future(_send(publisher, outbox))
        try:
            skip_key = _position(skip) if skip is not None else None
            while True:
                started = loop.time()
                # Longer than any follower's: they end by their own idle timers first, and the
                # campaign stops with the last of them (see the module docstring).
                timeout = min(2 * max(campaign.followers, default=60) + 10, 600)
                items = campaign.base.open(resume, timeout)
                try:
                    async with contextlib.aclosing(items):  # type: ignore[type-var]
                        async for item in items:
                            if not is_cursor(item.id):
                                raise RelayError(
                                    f"Part id {item.id!r} is not a stream cursor: it cannot be "
                                    "relayed to the other server processes."
                                )
                            if skip_key is not None and item.position <= skip_key:
                                continue  # published by the previous leader
                            await outbox.put(item, sender)
                except (asyncio.CancelledError, LeaseLost, RelayConflict):
                    raise
                except Exception as exc:
                    await outbox.drain(sender)
                    status, message = _describe(campaign.base, exc)
                    if status >= 500 and not isinstance(exc, RelayError):
                        logger.warning("trigger_django: fan-out read failed: %s", message)
                    return str(await publisher.end("error", status=status, message=message))
                # Upstream went idle (that is all a clean end means): read on from the cursor
                # for as long as this process follows the relay.
                await outbox.drain(sender)
                if outbox.last is not None:
                    resume = outbox.last.resume
                    skip_key = outbox.last.position
                if loop.time() - started < MIN_READ_SECONDS:
                    await asyncio.sleep(MIN_READ_SECONDS)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender


class _Outbox:
    """Parts read upstream, waiting for the sender; bounded (the read waits when it is full)."""

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.wake = asyncio.Event()
        self.changed = asyncio.Event()
        self.last: Item | None = None  # the last part published

    async def put(self, item: Item, sender: asyncio.Future[None]) -> None:
        while len(self.items) >= OUTBOX_LIMIT:
            await self._wait(sender)
        self.items.append(item)
        self.wake.set()

    async def drain(self, sender: asyncio.Future[None]) -> None:
        while self.items:
            await self._wait(sender)

    async def _wait(self, sender: asyncio.Future[None]) -> None:
        if sender.done():
            sender.result()  # raises what stopped it
            raise RelayError("The relay publisher stopped.")
        self.changed.clear()
        waiter: asyncio.Future[Any] = asyncio.ensure_future(self.changed.wait())
        either: set[asyncio.Future[Any]] = {waiter, sender}
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if sender.done():
            sender.result()
            raise RelayError("The relay publisher stopped.")


async def _send(publisher: RelayPublisher, outbox: _Outbox) -> None:
    """Publish whatever the read put in the outbox: everything that arrived while the previous
    publish was under way goes in the next one (whole SSE reads, so whole v1 entries unless TCP
    cut one; a takeover is exact either way, see the module docstring)."""
    while True:
        await outbox.wake.wait()
        outbox.wake.clear()
        while outbox.items:
            batch = outbox.items[:PUBLISH_BATCH]
            parts = [RelayPart(Cursor(item.id, item.position[-1]), item.data, 0) for item in batch]
            delay = 0.05
            while True:
                try:
                    await publisher.publish(parts)
                    break
                except CONNECTION_ERRORS:
                    # Retried (a lost reply is recognised) until the keeper says the lease ran out.
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)
            del outbox.items[: len(batch)]
            outbox.last = batch[-1]
            outbox.changed.set()


class FanoutSource:
    """An output stream read through the cluster's relay (``hub.Source``); see the module."""

    __slots__ = ("base", "fanout", "relay")

    def __init__(self, base: OutputStream, fanout: Fanout) -> None:
        self.base = base
        self.fanout = fanout
        self.relay = fanout.relay_for(base)

    @property
    def key(self) -> tuple[Hashable, ...]:
        return self.base.key

    # The consumer's ticket renewal reads these off a feed's source.
    @property
    def run_id(self) -> str:
        return self.base.run_id

    @property
    def stream_key(self) -> str:
        return self.base.stream_key

    def describe_error(self, exc: BaseException) -> tuple[int, str]:
        return _describe(self.base, exc)

    async def open(self, resume: str | None, idle_timeout: int) -> AsyncIterator[Item]:
        relay = self.relay
        loop = asyncio.get_running_loop()
        tail = await relay.resume_point()
        opened_at = _id_key(tail.entry_id or "0-0")
        campaign = self.fanout.join(
            self.base, relay, idle_timeout, tail.end.entry_id if tail.end is not None else None
        )
        try:
            # The last part yielded (or the cursor opened after) and where to resume after it,
            # as OutputStream computes them.
            last_position: tuple[int, ...] = (
                () if resume is None else (*cursor_key(resume), AFTER_ALL)
            )
            skip = Cursor(resume, AFTER_ALL) if resume else None
            last_resume = resume
            previous_id: str | None = None
            entry_before = resume
            after = "0-0" if resume is None else await _start_after(relay, last_position)
            # The first idle period also allows for a leader to be elected and connect (the
            # upstream server starts its idle timer only once it reads, too).
            lease = relay.lease(ttl=self.fanout.lease_seconds, prefix=self.fanout.prefix)
            deadline = loop.time() + idle_timeout + self.fanout.lease_seconds
            while True:
                follower = relay.follow(after, block=FOLLOW_BLOCK, skip_through=skip)
                try:
                    while True:
                        try:
                            async with asyncio.timeout_at(deadline):
                                entry = await anext(follower)
                        except TimeoutError:
                            if loop.time() < deadline:
                                raise
                            if await lease.holder() is not None:
                                return  # idle for idle_timeout: as the upstream read ends
                            # Nobody reads upstream right now (a handoff): not idle, wait.
                            deadline = loop.time() + self.fanout.lease_seconds / 4
                            continue
                        except StopAsyncIteration:
                            return
                        if isinstance(entry, RelayEnd):
                            if _id_key(entry.entry_id) <= opened_at:
                                # The end of an earlier read, not of ours: go on after it.
                                after, skip = entry.entry_id, follower.last
                                break
                            if entry.kind == "error":
                                raise RelayedError(entry.status or 502, entry.message or "")
                            return
                        assert isinstance(entry, RelayPart)
                        deadline = loop.time() + idle_timeout
                        part_id = entry.cursor.id
                        if "-" in part_id:
                            if previous_id is not None and part_id != previous_id:
                                entry_before = previous_id
                            last_resume = entry_before
                        else:
                            last_resume = part_id
                        previous_id = part_id
                        last_position = _position(entry.cursor)
                        data = entry.data
                        yield Item(last_position, part_id, data, len(data), last_resume)
                except RelayGap:
                    # Older than the relay keeps: read upstream on our own from the last part,
                    # up to the relay's oldest part, then follow the relay again after it.
                    oldest = await _first_part(relay)
                    if oldest is None:
                        after, skip = "0-0", follower.last
                        continue
                    target = _position(oldest.cursor)
                    reached = False
                    items = self.base.open(last_resume, idle_timeout)
                    async with contextlib.aclosing(items):  # type: ignore[type-var]
                        async for item in items:
                            if item.position <= last_position:
                                continue
                            last_position, last_resume = item.position, item.resume
                            previous_id = item.id
                            if "-" in item.id:
                                entry_before = item.resume
                            deadline = loop.time() + idle_timeout
                            yield item
                            if item.position >= target:
                                reached = True
                                break
                    if not reached:
                        return  # upstream went idle before reaching the relay's parts
                    assert previous_id is not None
                    after = oldest.entry_id
                    skip = Cursor(previous_id, last_position[-1])
        finally:
            self.fanout.leave(campaign, idle_timeout)


# --- helpers ------------------------------------------------------------------------------------


def _describe(base: OutputStream, exc: BaseException) -> tuple[int, str]:
    if isinstance(exc, RelayedError):
        return exc.status, exc.message
    if isinstance(exc, CONNECTION_ERRORS):
        return 503, (
            f"Could not read stream {base.stream_key!r} of run {base.run_id}: the live relay "
            "(Redis) is unreachable."
        )
    if isinstance(exc, RelayError):
        return 502, f"Could not relay stream {base.stream_key!r} of run {base.run_id}: {exc}"
    return base.describe_error(exc)


def _position(cursor: Cursor) -> tuple[int, ...]:
    """The hub position of a relayed part (as OutputStream numbers it)."""
    return (*cursor_key(cursor.id), cursor.i)


def _entries(result: Any) -> list[tuple[Any, Any]]:
    return list(result or [])


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


async def _last_part(relay: StreamRelay, before: str | None) -> RelayPart | None:
    """The last part at or before the relay entry ``before`` (skipping end markers)."""
    if before is None:
        return None
    high = before
    while True:
        entries = _entries(await relay.redis.xrevrange(relay.stream_key, high, "-", count=64))
        for entry_id, fields in entries:
            entry = _decode(_text(entry_id), fields)
            if isinstance(entry, RelayPart):
                return entry
        if len(entries) < 64:
            return None
        high = f"({_text(entries[-1][0])}"


async def _start_after(relay: StreamRelay, position: tuple[int, ...]) -> str:
    """A relay entry to follow from for a read resuming at ``position``: the last part at or
    before it, looked for backwards from the tail over the last few thousand entries (a viewer
    resuming is usually near the live edge); "0-0" (the start) when it is older than that."""
    high = "+"
    for _ in range(8):
        entries = _entries(await relay.redis.xrevrange(relay.stream_key, high, "-", count=512))
        for entry_id, fields in entries:
            entry = _decode(_text(entry_id), fields)
            if isinstance(entry, RelayPart) and _position(entry.cursor) <= position:
                return entry.entry_id
        if len(entries) < 512:
            break
        high = f"({_text(entries[-1][0])}"
    return "0-0"


async def _first_part(relay: StreamRelay) -> RelayPart | None:
    entries = _entries(await relay.redis.xrange(relay.stream_key, "-", "+", count=64))
    for entry_id, fields in entries:
        entry = _decode(_text(entry_id), fields)
        if isinstance(entry, RelayPart):
            return entry
    return None


async def _upstream_resume(
    relay: StreamRelay, last: RelayPart | None
) -> tuple[str | None, Cursor | None]:
    """Where a new leader reads upstream from, and the last part already published.

    v2: strictly after the last cursor. v1: after the entry before the last published one (that
    entry is read again whole, as the hub resumes v1 reads; its parts already published are
    skipped), found as the previous distinct id in the relay; none: from the start."""
    if last is None:
        return None, None
    part_id = last.cursor.id
    if "-" not in part_id:
        return part_id, last.cursor
    high = f"({last.entry_id}"
    while True:
        entries = _entries(await relay.redis.xrevrange(relay.stream_key, high, "-", count=64))
        for entry_id, fields in entries:
            entry = _decode(_text(entry_id), fields)
            if isinstance(entry, RelayPart) and entry.cursor.id != part_id:
                return entry.cursor.id, last.cursor
        if len(entries) < 64:
            first = entries[-1] if entries else None
            trimmed = first is not None and _decode(_text(first[0]), first[1]).position > 1
            # The relay holds nothing before this entry: it started there (from the start of
            # the stream, or its start_index) unless MAXLEN trimmed what came before.
            return (part_id if trimmed else None), last.cursor
        high = f"({_text(entries[-1][0])}"


# --- per-process wiring -------------------------------------------------------------------------

_fanouts: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Fanout] = weakref.WeakKeyDictionary()


def get_fanout() -> Fanout | None:
    """The fan-out of the running event loop, or None when ``FANOUT`` is off."""
    from trigger_django.conf import get_config

    config = get_config().fanout
    if config is None:
        return None
    loop = asyncio.get_running_loop()
    fanout = _fanouts.get(loop)
    if fanout is None or fanout.url != config.redis_url:
        fanout = _fanouts[loop] = Fanout(
            connect(config.redis_url),
            url=config.redis_url,
            lease_seconds=config.lease_seconds,
            maxlen=config.maxlen,
            retention=config.retention_seconds,
            prefix=config.key_prefix,
        )
    return fanout


def fanout_source(base: OutputStream) -> Source:
    """``base`` read through the cluster's relay when ``FANOUT`` is on, else ``base`` itself."""
    fanout = get_fanout()
    return base if fanout is None else fanout.source(base)
