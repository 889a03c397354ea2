"""The SSE reader of ``/realtime/v1/streams/…``: v1 (Redis) and v2 (S2) framing (§2.2, §2.3).

Parts are stored once per run; the framing is chosen when the stream is read.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from trigger_django.emulator.state import (
    BATCH_MAX_METERED_BYTES,
    BATCH_MAX_RECORDS,
    Fault,
    Record,
    Stream,
    now_ms,
)

SendBytes = Callable[[bytes], Awaitable[None]]

#: Entries per v1 write (Redis' XREAD COUNT is 100; bigger writes only save syscalls).
V1_BATCH_ENTRIES = 1000


class AbortConnection(Exception):
    """Raised inside the ASGI app to make uvicorn drop the connection mid-body."""


class InjectedDrop(AbortConnection):
    """A ``drop`` fault."""


@dataclass(slots=True)
class ReadSession:
    stream: Stream
    version: str
    start: int
    idle_timeout: float
    ping_interval: float
    disconnected: asyncio.Future[object]
    closing: asyncio.Event
    fault: Fault | None = None


async def serve_stream(session: ReadSession, send: SendBytes) -> None:
    """Write the SSE body until the stream is idle for ``idle_timeout`` or the client leaves."""
    stream = session.stream
    v2 = session.version == "v2"
    fault = session.fault
    cursor = session.start
    loop = asyncio.get_running_loop()

    if fault is not None and fault.kind == "stall" and not await _pause(session, fault.seconds):
        return
    if fault is not None and fault.kind == "malformed":
        await send(_malformed_frames(fault.variant, v2, max(cursor - 1, 0)))

    drop_after = fault.after if fault is not None and fault.kind == "drop" else None
    delivered = 0
    count = 0
    metered = 0
    v1_buffer = ""
    v1_last_id = "0"
    # v2: S2 reads what was written before the session reached the tail as catch-up batches
    # without ``tail``; once caught up it announces the tail in a ping and then sends each new
    # batch with ``tail`` (s2-lite ``backend/read.rs``, ``read_session``).
    following = False
    idle_deadline = loop.time() + session.idle_timeout
    last_sent = loop.time()

    closing_wait = asyncio.ensure_future(session.closing.wait())
    try:
        while True:
            if drop_after is not None and delivered >= drop_after:
                raise InjectedDrop(f"injected drop after {delivered} records")
            if cursor < len(stream.records):
                limit = BATCH_MAX_RECORDS if v2 else V1_BATCH_ENTRIES
                if drop_after is not None:
                    limit = min(limit, drop_after - delivered)
                if v2:
                    batch, batch_bytes = v2_batch(stream.records, cursor, limit)
                    count += len(batch)
                    metered += batch_bytes
                    frame = v2_batch_frame(batch, count, metered, tail=following)
                else:
                    batch = stream.records[cursor : cursor + limit]
                    pieces: list[str] = []
                    for record in batch:
                        v1_buffer += record.text
                        lines = v1_buffer.split("\n")
                        v1_buffer = lines.pop()
                        entry_id = record.entry_id
                        v1_last_id = entry_id
                        pieces.extend(
                            f"id: {entry_id}\ndata: {line}\n\n" for line in lines if line.strip()
                        )
                    frame = "".join(pieces)
                cursor += len(batch)
                delivered += len(batch)
                if frame:
                    await send(frame.encode())
                now = loop.time()
                idle_deadline = now + session.idle_timeout
                last_sent = now
                continue

            now = loop.time()
            if now >= idle_deadline:
                break
            if v2 and not following:
                # Caught up: S2 enters follow mode with a heartbeat carrying the tail.
                following = True
                await send(v2_ping_frame(stream.records))
                last_sent = now
            wake_at = min(idle_deadline, last_sent + session.ping_interval)
            changed = stream.changed()
            await asyncio.wait(
                (changed, session.disconnected, closing_wait),
                timeout=max(wake_at - now, 0),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if not changed.done():
                changed.cancel()
            if session.disconnected.done():
                return
            if session.closing.is_set():
                # Like a real server going away: no clean end, so clients reconnect.
                raise AbortConnection("the emulator is shutting down")
            if cursor >= len(stream.records) and loop.time() >= last_sent + session.ping_interval:
                if v2:
                    await send(v2_ping_frame(stream.records))
                else:
                    await send(b": ping\n\n")
                last_sent = loop.time()
    finally:
        closing_wait.cancel()

    if v2:
        await send(b"data: [DONE]\n\n")
    elif v1_buffer.strip():
        # The Redis reader flushes a trailing partial line, trimmed, with the last id.
        await send(f"id: {v1_last_id}\ndata: {v1_buffer.strip()}\n\n".encode())


def v2_batch(records: list[Record], start: int, limit: int) -> tuple[list[Record], int]:
    """The records of the next S2 batch from ``start`` and their metered bytes.

    A batch closes at ``limit`` (at most 1,000) records, or before the record that would take
    it past 1 MiB metered; a record of up to 1 MiB still goes alone
    (``s2_common::caps::RECORD_BATCH_MAX``).
    """
    end = min(len(records), start + limit)
    total = 0
    index = start
    while index < end:
        size = records[index].metered
        if index > start and total + size > BATCH_MAX_METERED_BYTES:
            break
        total += size
        index += 1
    return records[start:index], total


def _position(records: list[Record], upto: int) -> str:
    """S2's ``StreamPosition`` after the first ``upto`` records: the next seq_num and the
    timestamp of the last record (0 for an empty stream)."""
    timestamp = records[upto - 1].timestamp if upto else 0
    return f'{{"seq_num":{upto},"timestamp":{timestamp}}}'


def v2_batch_frame(batch: list[Record], count: int, metered: int, *, tail: bool) -> str:
    """``event: batch`` with ``id: <last seq>,<records so far>,<metered bytes so far>``;
    live batches (``tail``) carry the position after their last record, as s2-lite's follow
    mode sends them."""
    fragments = ",".join(record.v2_fragment() for record in batch)
    last = batch[-1]
    tail_json = f',"tail":{{"seq_num":{last.seq + 1},"timestamp":{last.timestamp}}}' if tail else ""
    return (
        f"event: batch\nid: {last.seq},{count},{metered}\n"
        f'data: {{"records":[{fragments}]{tail_json}}}\n\n'
    )


def v2_ping_frame(records: list[Record]) -> bytes:
    """``event: ping`` with the time and the stream's tail (s2 ``PingEventData``)."""
    return (
        f'event: ping\ndata: {{"timestamp":{now_ms()},"tail":{_position(records, len(records))}}}'
        "\n\n"
    ).encode()


async def _pause(session: ReadSession, seconds: float) -> bool:
    """Wait ``seconds``; ``False`` when the client left meanwhile."""
    await asyncio.wait((session.disconnected,), timeout=seconds)
    return not session.disconnected.done()


def _malformed_frames(variant: str, v2: bool, seq: int) -> bytes:
    frames: list[str] = []
    if variant in ("all", "garbage"):
        frames.append("this line is not an SSE field\n{{{garbage}}}\n\n")
    if variant in ("all", "invalid_json"):
        if v2:
            frames.append('event: batch\nid: 0,0,0\ndata: {"records":[{"seq_num":\n\n')
        else:
            frames.append('id: 0-1\ndata: {"unterminated\n\n')
    if variant in ("all", "non_json_body"):
        if v2:
            record = {"seq_num": seq, "timestamp": now_ms(), "body": "not json at all"}
            frames.append(
                f"event: batch\nid: {seq},1,23\ndata: {json.dumps({'records': [record]})}\n\n"
            )
        else:
            frames.append("id: 0-1\ndata: not json at all\n\n")
    return "".join(frames).encode()
