"""Redis primitives of the cross-process fan-out (``TRIGGER_DJANGO["FANOUT"]``, issue 9).

One upstream reader per (run, stream) for the whole cluster: the process holding an expiring
:class:`Lease` reads upstream and relays each part through a Redis Stream
(:class:`StreamRelay`); every other process follows that stream from its own cursor.

Why Redis Streams and not channels_redis groups: a group message reaches only whoever listens at
that moment, so a late joiner, a follower that lost its connection, or a process taking over the
lease after the leaseholder died would have nothing to replay the missed parts from, and groups
pass through every worker's channel capacity, which drops on ``ChannelFull``. A Stream keeps the
recent parts in order, each with an id: late joiners replay from a cursor, a reconnecting follower
continues from the last id it read, and a new leaseholder finds the last upstream cursor that
was published (``XREVRANGE … COUNT 1``) and resumes upstream strictly after it.

Guarantees:

* Only the holder of a lease renews or releases it (a Lua compare-and-set on its token), and a
  publish is refused (:class:`LeaseLost`) once the publisher's lease is no longer held by it, so
  a stalled old leaseholder cannot write after its successor took over.
* A publish is one Lua script, atomic: all its parts or none, and only onto the tail the
  publisher last saw. A publish retried after a lost reply is recognised and not written twice.
  Publish whole upstream entries per call (every part of a v1 entry together), so the stream
  never ends inside an entry and "strictly after the last cursor" is an exact resume point.
* Followers get every entry once and in order, across reconnects (they resume from the last
  entry id they yielded) and across a Redis that lost its data (parts at or below the last
  upstream cursor yielded are skipped). Every entry carries its position (1, 2, …, written by
  the publish script), so a follower whose cursor fell behind the ``MAXLEN ~`` trimming gets
  :class:`RelayGap` instead of a silent hole.
* Every connection has a read timeout longer than its own blocking reads (``XREAD BLOCK`` is
  refused if it is not), TCP keepalive, and reconnects on a real connection loss. Nothing here
  depends on the per-process hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = [
    "KEY_PREFIX",
    "SOCKET_TIMEOUT",
    "Cursor",
    "Lease",
    "LeaseKeeper",
    "LeaseLost",
    "RelayConflict",
    "RelayEnd",
    "RelayEntry",
    "RelayError",
    "RelayFollower",
    "RelayGap",
    "RelayPart",
    "RelayPublisher",
    "ResumePoint",
    "StreamRelay",
    "connect",
]

KEY_PREFIX = "trigger_django:"
#: The read timeout of :func:`connect`'s connections: longer than any ``XREAD BLOCK`` here.
SOCKET_TIMEOUT = 30.0
#: Connection failures worth reconnecting for (a restarted or unreachable Redis, a killed client).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    OSError,
)


def connect(url: str, *, socket_timeout: float | None = SOCKET_TIMEOUT, **options: Any) -> Redis:
    """An asyncio Redis client for the fan-out, from ``url`` (``redis://host:port/db``).

    Unlike redis-py 8's defaults (5 s), the read timeout outlasts the blocking reads made here;
    ``None`` turns it off. Commands are retried with jittered backoff over a reconnect when the
    connection is lost; TCP keepalive notices a dead peer.
    """
    kwargs: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": 5.0,
        "socket_keepalive": True,
        "retry": Retry(EqualJitterBackoff(cap=1.0, base=0.05), 5),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        "decode_responses": True,
        **options,
    }
    return Redis.from_url(url, **kwargs)


class RelayError(Exception):
    """Base of this module's errors."""


class LeaseLost(RelayError):
    """The lease is no longer held by this holder: stop reading upstream and publishing."""


class RelayConflict(RelayError):
    """The stream's tail is not where this publisher left it: someone else published."""


class RelayGap(RelayError):
    """Entries after the follower's cursor were trimmed away; catch up from upstream instead."""

    def __init__(self, after: str, first_missing: int | None, last_missing: int | None) -> None:
        what = (
            f"entries {first_missing} to {last_missing}"
            if first_missing is not None
            else "the entry at the cursor"
        )
        super().__init__(
            f"The relay no longer holds {what} (after {after}): they were trimmed by MAXLEN; "
            "catch up from upstream by cursor."
        )
        self.after = after
        self.first_missing = first_missing
        self.last_missing = last_missing


# -- Lease -------------------------------------------------------------------------------------

_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Lease:
    """An expiring lease on ``name``, held by a random token (``SET NX PX``).

    ``acquire()`` is idempotent for the holder (a retry after a lost reply still reports the
    lease as ours); ``renew()`` and ``release()`` act only while this token holds it.
    """

    def __init__(
        self,
        redis: Redis,
        name: str,
        *,
        ttl: float,
        token: str | None = None,
        prefix: str = KEY_PREFIX,
    ) -> None:
        if ttl <= 0:
            raise ValueError(f"A lease needs a positive ttl, not {ttl!r}.")
        self.redis = redis
        self.name = name
        # The braces are a Redis Cluster hash tag: a relay's lease and stream share a slot, so
        # the publish script may touch both.
        self.key = f"{prefix}lease:{{{name}}}"
        self.ttl = float(ttl)
        self.token = token or secrets.token_hex(16)
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    @property
    def _ttl_ms(self) -> int:
        return max(1, round(self.ttl * 1000))

    async def acquire(self) -> bool:
        """Take the lease if it is free (or extend it if it is already ours)."""
        return bool(await self._acquire(keys=[self.key], args=[self.token, self._ttl_ms]))

    async def renew(self) -> bool:
        """Extend the lease by its ttl; False when this token no longer holds it."""
        return bool(await self._renew(keys=[self.key], args=[self.token, self._ttl_ms]))

    async def release(self) -> bool:
        """Drop the lease so another process can take over at once; False if not ours."""
        return bool(await self._release(keys=[self.key], args=[self.token]))

    async def holder(self) -> str | None:
        """The token holding the lease now, or None."""
        value = await self.redis.get(self.key)
        return None if value is None else _text(value)

    async def wait_acquire(self, *, poll: float | None = None) -> None:
        """Wait until this token holds the lease (polling every ``poll``, default ttl / 4).

        Connection losses are waited out; cancel to give up.
        """
        interval = self.ttl / 4 if poll is None else poll
        while True:
            try:
                if await self.acquire():
                    return
            except CONNECTION_ERRORS:
                pass
            await asyncio.sleep(interval)

    def kept(self, *, every: float | None = None) -> LeaseKeeper:
        """An async context manager renewing the lease every ``every`` s (default ttl / 3)."""
        return LeaseKeeper(self, every=self.ttl / 3 if every is None else every)


class LeaseKeeper:
    """Renews a held lease in the background until the ``async with`` block ends.

    ``lost`` is set when a renewal is refused (someone else holds the lease) or when the ttl ran
    out since the last renewal Redis confirmed (connection losses are retried until then). On a
    normal exit the lease is released, unless it was lost.
    """

    def __init__(self, lease: Lease, *, every: float) -> None:
        if not 0 < every < lease.ttl:
            raise ValueError(f"Renew more often than the ttl ({lease.ttl} s), not every {every} s.")
        self.lease = lease
        self.every = every
        self.lost = asyncio.Event()
        self.valid_until = 0.0  # monotonic time the lease surely lasts until
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LeaseKeeper:
        # The caller has just acquired the lease: count its ttl from now (conservative).
        self.valid_until = time.monotonic() + self.lease.ttl
        self._task = asyncio.create_task(self._run(), name=f"lease-keeper:{self.lease.name}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if not self.lost.is_set():
            # Best effort: if Redis is away, the lease expires by itself within its ttl.
            with contextlib.suppress(*CONNECTION_ERRORS):
                async with asyncio.timeout(self.lease.ttl):
                    await self.lease.release()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(min(self.every, max(0.0, self.valid_until - time.monotonic())))
            sent = time.monotonic()
            remaining = self.valid_until - sent
            if remaining <= 0:
                self.lost.set()
                return
            try:
                async with asyncio.timeout(remaining):
                    held = await self.lease.renew()
            except CONNECTION_ERRORS:  # OSError covers the timeout above
                if time.monotonic() >= self.valid_until:
                    self.lost.set()
                    return
                await asyncio.sleep(min(0.05, self.every))
                continue
            if not held:
                self.lost.set()
                return
            self.valid_until = sent + self.lease.ttl


# -- Relay -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cursor:
    """An upstream position: the v2 seq (``"17"``) or v1 Redis id, and the part's occurrence
    ``i`` within a v1 entry (0 for the first, and always 0 on v2)."""

    id: str
    i: int = 0

    def key(self) -> tuple[int, int, int]:
        """A sort key: v2 seqs and v1 ``ms-seq`` ids compare numerically."""
        match = _CURSOR.fullmatch(self.id)
        if match is None:
            raise ValueError(f"Not an upstream cursor: {self.id!r}.")
        return int(match.group(1)), int(match.group(2) or 0), self.i


_CURSOR = re.compile(r"(\d+)(?:-(\d+))?")


@dataclass(frozen=True, slots=True)
class RelayPart:
    """One upstream part: its cursor, the chunk as JSON text (encoded once by the publisher, so
    followers can forward the text as it is), and the upstream timestamp (epoch ms)."""

    cursor: Cursor
    data: str
    timestamp: int
    entry_id: str = ""  # the relay stream's id, set on read
    position: int = 0  # 1, 2, … in the relay, set on read (a jump is a trimmed gap)


@dataclass(frozen=True, slots=True)
class RelayEnd:
    """The terminal marker: ``complete``, or ``error`` with the HTTP-like status and a message."""

    kind: Literal["complete", "error"]
    status: int | None = None
    message: str | None = None
    entry_id: str = ""
    position: int = 0


RelayEntry = RelayPart | RelayEnd


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """Where the relay stands: its tail entry id (None when empty), the last upstream cursor
    published (None: read upstream from the start) and the terminal marker if it ended."""

    entry_id: str | None
    cursor: Cursor | None
    end: RelayEnd | None


_PUBLISH = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return {'lost'} end
local tail = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local tail_id = ''
local position = 0
if #tail > 0 then
  tail_id = tail[1][1]
  local fields = tail[1][2]
  for f = 1, #fields, 2 do
    if fields[f] == 'n' then position = tonumber(fields[f + 1]) end
  end
end
if tail_id ~= ARGV[2] then
  if #tail > 0 then return {'moved', tail_id, tail[1][2]} end
  return {'moved', ''}
end
local result = {'ok'}
local k = 5
while k <= #ARGV do
  local count = tonumber(ARGV[k])
  position = position + 1
  local command = {'XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'n', position}
  for j = 1, count do command[#command + 1] = ARGV[k + j] end
  result[#result + 1] = redis.call(unpack(command))
  k = k + count + 1
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return result
"""


class StreamRelay:
    """The relay stream of one (run, stream key): publish as leaseholder, follow otherwise."""

    def __init__(
        self,
        redis: Redis,
        run_id: str,
        key: str,
        *,
        maxlen: int = 10_000,
        retention: float = 3600.0,
        prefix: str = KEY_PREFIX,
    ) -> None:
        if maxlen < 1:
            raise ValueError(f"maxlen must be at least 1, not {maxlen!r}.")
        self.redis = redis
        self.run_id = run_id
        self.key = key
        self.stream_key = f"{prefix}relay:{{{run_id}:{key}}}"
        self.maxlen = maxlen
        self.retention = retention  # seconds the stream outlives its last publish
        self._publish = redis.register_script(_PUBLISH)

    def lease(self, *, ttl: float, token: str | None = None, prefix: str = KEY_PREFIX) -> Lease:
        """The lease electing this relay's one upstream reader."""
        return Lease(self.redis, f"{self.run_id}:{self.key}", ttl=ttl, token=token, prefix=prefix)

    async def resume_point(self) -> ResumePoint:
        """The tail of the relay (``XREVRANGE + - COUNT 1``): where a new leaseholder resumes."""
        tail = await self.redis.xrevrange(self.stream_key, "+", "-", count=1)
        if not tail:
            return ResumePoint(None, None, None)
        entry_id, fields = tail[0]
        entry = _decode(_text(entry_id), fields)
        if isinstance(entry, RelayEnd):
            # The end marker follows the last part; the cursor matters only for the record.
            before = await self.redis.xrevrange(self.stream_key, f"({entry.entry_id}", "-", count=1)
            cursor = None
            if before:
                previous = _decode(_text(before[0][0]), before[0][1])
                cursor = previous.cursor if isinstance(previous, RelayPart) else None
            return ResumePoint(entry.entry_id, cursor, entry)
        return ResumePoint(entry.entry_id, entry.cursor, None)

    def publisher(self, lease: Lease, resume: ResumePoint) -> RelayPublisher:
        """A publisher for the holder of ``lease``, starting at the tail ``resume`` saw."""
        return RelayPublisher(self, lease, resume)

    async def read(
        self, after: str = "0-0", *, count: int = 512, block: float | None = None
    ) -> list[RelayEntry]:
        """Entries strictly after the relay id ``after``; with ``block`` (seconds), wait that long
        for the first one (``XREAD BLOCK``), returning [] if none came."""
        block_ms = None
        if block is not None:
            _check_block(self.redis, block)
            block_ms = max(1, round(block * 1000))
        response = await self.redis.xread({self.stream_key: after}, count=count, block=block_ms)
        entries: list[RelayEntry] = []
        for _stream, items in _stream_items(response):
            entries.extend(_decode(_text(entry_id), fields) for entry_id, fields in items)
        return entries

    def follow(
        self,
        after: str = "0-0",
        *,
        count: int = 512,
        block: float = 5.0,
        skip_through: Cursor | None = None,
    ) -> RelayFollower:
        """Follow the relay from ``after`` until its terminal marker (async iterator).

        ``skip_through``: parts at or below this upstream cursor are not yielded (a viewer that
        already has them).
        """
        return RelayFollower(self, after, count=count, block=block, skip_through=skip_through)


class RelayPublisher:
    """Publishes upstream parts as the leaseholder (see the module's guarantees)."""

    def __init__(self, relay: StreamRelay, lease: Lease, resume: ResumePoint) -> None:
        if resume.end is not None:
            raise RelayError(f"The relay {relay.stream_key} has already ended.")
        self.relay = relay
        self.lease = lease
        self.tail: str | None = resume.entry_id
        self.last: Cursor | None = resume.cursor

    async def publish(self, parts: Sequence[RelayPart]) -> str | None:
        """Append whole upstream entries' parts in order; returns the new tail id.

        Raises :class:`LeaseLost` when the lease is no longer ours, :class:`RelayConflict` when
        someone else moved the tail.
        """
        if not parts:
            return self.tail
        entries = [
            [
                "t",
                "p",
                "c",
                part.cursor.id,
                "i",
                part.cursor.i,
                "d",
                part.data,
                "ts",
                part.timestamp,
            ]
            for part in parts
        ]
        await self._append(entries, parts[-1])
        self.last = parts[-1].cursor
        return self.tail

    async def end(
        self,
        kind: Literal["complete", "error"] = "complete",
        *,
        status: int | None = None,
        message: str | None = None,
    ) -> str | None:
        """Append the terminal marker; followers stop after it."""
        fields: list[str | int] = ["t", "c" if kind == "complete" else "e"]
        if status is not None:
            fields += ["s", status]
        if message is not None:
            fields += ["m", message]
        await self._append([fields], RelayEnd(kind, status, message))
        return self.tail

    async def _append(self, entries: list[list[Any]], last: RelayEntry) -> None:
        args: list[Any] = [
            self.lease.token,
            self.tail or "",
            self.relay.maxlen,
            max(1, round(self.relay.retention * 1000)),
        ]
        for fields in entries:
            args.append(len(fields))
            args.extend(fields)
        result = await self.relay._publish(keys=[self.relay.stream_key, self.lease.key], args=args)
        status = _text(result[0])
        if status == "ok":
            self.tail = _text(result[-1])
            return
        if status == "lost":
            raise LeaseLost(f"The lease {self.lease.key} is no longer held by this process.")
        tail_id = _text(result[1])
        if tail_id and len(result) > 2:
            # Our own publish, retried after its reply was lost, is already the tail.
            tail = _decode(tail_id, _pairs(result[2]))
            if _same(tail, last):
                self.tail = tail_id
                return
        raise RelayConflict(
            f"The relay {self.relay.stream_key} ends at {tail_id or 'nothing'}, "
            f"not at {self.tail or 'nothing'} where this publisher left it."
        )


class RelayFollower:
    """Async iterator over a relay's entries, from a cursor up to and including its end marker.

    Reconnects (with backoff) on connection loss and continues from the last entry id it yielded;
    ``reconnects`` counts those. ``after`` is that id, the cursor to follow again from later.
    Raises :class:`RelayGap` (after yielding everything before it) when entries after its cursor
    were trimmed away, including when the entry at a given ``after`` no longer exists.
    """

    def __init__(
        self,
        relay: StreamRelay,
        after: str,
        *,
        count: int,
        block: float,
        skip_through: Cursor | None,
    ) -> None:
        _check_block(relay.redis, block)
        self.relay = relay
        self.after = after
        self.count = count
        self.block = block
        self.last: Cursor | None = skip_through
        self.reconnects = 0
        self.position: int | None = 0 if after in {"0", "0-0"} else None
        self._pending: list[RelayEntry] = []
        self._gap: RelayGap | None = None
        self._ended = False

    def __aiter__(self) -> AsyncIterator[RelayEntry]:
        return self

    async def __anext__(self) -> RelayEntry:
        while not self._pending:
            if self._gap is not None:
                raise self._gap
            if self._ended:
                raise StopAsyncIteration
            await self._fill()
        entry = self._pending.pop(0)
        self.after = entry.entry_id
        self.position = entry.position
        if isinstance(entry, RelayEnd):
            self._ended = True
            self._pending.clear()
        else:
            self.last = entry.cursor
        return entry

    async def _fill(self) -> None:
        delay = 0.05
        while True:
            try:
                if self.position is None:
                    self.position = await self._position_of(self.after)
                entries = await self.relay.read(self.after, count=self.count, block=self.block)
                break
            except CONNECTION_ERRORS:
                self.reconnects += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        position = self.position
        last_key = self.last.key() if self.last is not None else None
        for entry in entries:
            if entry.position > position + 1:
                self._gap = RelayGap(self.after, position + 1, entry.position - 1)
                return
            # A lower position: the relay was recreated (Redis lost its data); go on by cursor.
            position = entry.position
            if isinstance(entry, RelayPart) and last_key is not None:
                key = entry.cursor.key()
                if key <= last_key:
                    self.after, self.position = entry.entry_id, position  # already had it
                    continue
                last_key = key
            self._pending.append(entry)

    async def _position_of(self, entry_id: str) -> int:
        found = await self.relay.redis.xrange(self.relay.stream_key, entry_id, entry_id, count=1)
        if not found:
            self._gap = RelayGap(entry_id, None, None)
            raise self._gap
        return _decode(_text(found[0][0]), found[0][1]).position


# -- helpers -----------------------------------------------------------------------------------


def _check_block(redis: Redis, block: float) -> None:
    if block <= 0:
        raise ValueError(f"A blocking read needs a positive block time, not {block!r}.")
    # Not given: redis-py 8's default of 5 s (older versions had none; assume the shorter).
    timeout = redis.connection_pool.connection_kwargs.get("socket_timeout", 5.0)
    if timeout is not None and block >= float(timeout):
        raise ValueError(
            f"XREAD BLOCK {block} s would outlast the connection's socket_timeout of {timeout} s; "
            "block for less, or connect with a longer timeout (redis_feed.connect)."
        )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(flat: Sequence[Any]) -> dict[str, str]:
    return {_text(flat[n]): _text(flat[n + 1]) for n in range(0, len(flat) - 1, 2)}


def _stream_items(response: Any) -> list[tuple[Any, list[tuple[Any, Any]]]]:
    if not response:
        return []
    if isinstance(response, dict):  # RESP3
        return [(name, items) for name, items in response.items()]
    return [(name, items) for name, items in response]


def _decode(entry_id: str, fields: Any) -> RelayEntry:
    values = {_text(k): _text(v) for k, v in fields.items()} if isinstance(fields, dict) else None
    if values is None:
        values = _pairs(fields)
    kind = values.get("t")
    position = int(values.get("n", 0))
    if kind == "p":
        return RelayPart(
            Cursor(values["c"], int(values.get("i", 0))),
            values["d"],
            int(values.get("ts", 0)),
            entry_id,
            position,
        )
    if kind in {"c", "e"}:
        status = values.get("s")
        return RelayEnd(
            "complete" if kind == "c" else "error",
            int(status) if status is not None else None,
            values.get("m"),
            entry_id,
            position,
        )
    raise RelayError(f"Entry {entry_id} of the relay is not a part or an end marker: {values!r}.")


def _same(a: RelayEntry, b: RelayEntry) -> bool:
    if isinstance(a, RelayPart) and isinstance(b, RelayPart):
        return a.cursor == b.cursor
    if isinstance(a, RelayEnd) and isinstance(b, RelayEnd):
        return (a.kind, a.status, a.message) == (b.kind, b.status, b.message)
    return False
