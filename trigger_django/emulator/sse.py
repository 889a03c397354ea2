"""The SSE reader of ``/realtime/v1/streams/…``: v1 (Redis) and v2 (S2) framing (§2.2, §2.3).

Parts are stored once per run; the framing is chosen when the stream is read.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from trigger_django.emulator.state import Fault, Stream, now_ms

SendBytes = Callable[[bytes], Awaitable[None]]

#: Records per v2 ``batch`` event (S2 itself caps a read at 1000 records).
V2_BATCH_RECORDS = 1000
#: Entries per v1 write (Redis' XREAD COUNT is 100; bigger writes only save syscalls).
V1_BATCH_ENTRIES = 1000
#: S2's metered size of a record without headers: 8 bytes plus the body.
_RECORD_OVERHEAD = 8


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
    idle_deadline = loop.time() + session.idle_timeout
    last_sent = loop.time()

    closing_wait = asyncio.ensure_future(session.closing.wait())
    try:
        while True:
            if drop_after is not None and delivered >= drop_after:
                raise InjectedDrop(f"injected drop after {delivered} records")
            if cursor < len(stream.records):
                limit = V2_BATCH_RECORDS if v2 else V1_BATCH_ENTRIES
                if drop_after is not None:
                    limit = min(limit, drop_after - delivered)
                batch = stream.records[cursor : cursor + limit]
                cursor += len(batch)
                delivered += len(batch)
                if v2:
                    count += len(batch)
                    metered += sum(_RECORD_OVERHEAD + len(record.text.encode()) for record in batch)
                    fragments = ",".join(record.v2_fragment() for record in batch)
                    frame = (
                        f"event: batch\nid: {batch[-1].seq},{count},{metered}\n"
                        f'data: {{"records":[{fragments}]}}\n\n'
                    )
                else:
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
                if frame:
                    await send(frame.encode())
                now = loop.time()
                idle_deadline = now + session.idle_timeout
                last_sent = now
                continue

            now = loop.time()
            if now >= idle_deadline:
                break
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
                    await send(f'event: ping\ndata: {{"timestamp":{now_ms()}}}\n\n'.encode())
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
