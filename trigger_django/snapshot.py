"""The text a stream already holds, for the first HTML of a page (``{% stream_viewer %}``, and
every stream of a ``{% run_viewer %}``: `read_snapshots`).

While a page renders, `read_snapshot` reads the stream from its start for at most
``SNAPSHOT_DEADLINE`` seconds (default 0.5; 0 turns it off), and takes the run's state from
``trigger_django.runs.fetch_run`` (which ``{% run_status %}`` on the same page has usually
fetched already; otherwise within ``RUN_STATE_DEADLINE``). On a v2 stream the read knows when it
has caught up: S2 sends a ``ping`` (or a live ``batch``) carrying ``tail`` once it has delivered
everything the stream held, and the read stops there, usually within a few milliseconds. A v1
stream says nothing of it, so the read takes what arrived before the deadline. The viewer then
shows that text (or its markdown, in the state the hub's rendering has after the same parts: the
frozen blocks depend on the text only, so the block count matches the live items) and carries
the cursor of its last part, so the socket resumes after it.

A run that has already finished (``trigger_django.runs.FINISHED_STATUSES``) and whose stream was
read to its end renders ``complete``: the page opens no socket for it.

A run viewer reads all of its run's streams at once: `read_snapshots` reads them concurrently,
on one HTTP client, within one ``SNAPSHOT_DEADLINE`` shared by all (not one deadline each).

Rendering is synchronous; the read runs in its own event loop (``async_to_sync``) and is refused
inside a running event loop, which must never block: the socket brings the text instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from asgiref.sync import async_to_sync

from trigger_django.client import StreamPart, TriggerClient
from trigger_django.conf import get_config
from trigger_django.live.markdown import chunk_text
from trigger_django.markdown import MarkdownStream
from trigger_django.upstream import UpstreamConfigurationError

__all__ = [
    "MAX_SNAPSHOT_STREAMS",
    "Snapshot",
    "bounded_sync",
    "read_snapshot",
    "read_snapshots",
    "snapshot_from_parts",
]

logger = logging.getLogger(__name__)
#: At most this many streams of a run are read for ``{% run_viewer %}``'s first HTML.
MAX_SNAPSHOT_STREAMS = 8
T = TypeVar("T")


def bounded_sync(function: Callable[..., Awaitable[T]], *args: Any) -> T | None:
    """``await function(*args)`` from synchronous code (a template rendering), or ``None`` when
    called inside a running event loop (which must not block) or when it fails."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return None
    try:
        return async_to_sync(function)(*args)
    except Exception as exc:  # the page still renders; the socket will tell
        logger.info("trigger_django: nothing read at render time: %s", exc)
        return None


@dataclass(frozen=True)
class Snapshot:
    """What a stream held when the page was rendered."""

    #: Parts read, and the text they make (string chunks as they are, others as JSON lines).
    parts: int
    texts: list[str]
    #: The last part's id and its ``i`` (v1: its rank within its entry), and on v1 the id of
    #: the entry before it (where the page resumes, see trigger-django.js ``resumeCursor``).
    cursor: str | None
    cursor_i: int
    entry_before: str | None
    #: Markdown: the frozen blocks' HTML, the open tail's HTML (healed, or as written once the
    #: stream is complete), how many blocks and parts were rendered.
    blocks: list[str]
    tail: str
    #: The run had finished and the read reached the stream's end: nothing more will come.
    complete: bool
    #: The parts' chunks as read (a run viewer renders object parts from them).
    chunks: list[Any] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.texts)

    def kept_texts(self, max_parts: int | None) -> list[str]:
        return self.texts if max_parts is None else self.texts[-max_parts:]

    def kept_blocks(self, max_parts: int | None) -> list[str]:
        return self.blocks if max_parts is None else self.blocks[-max_parts:]


def snapshot_from_parts(parts: list[StreamPart], *, markdown: bool, complete: bool) -> Snapshot:
    """The snapshot of ``parts`` (in stream order)."""
    texts = [chunk_text(part.chunk) for part in parts]
    cursor = parts[-1].id if parts else None
    cursor_i = 0
    entry_before: str | None = None
    if cursor is not None and "-" in cursor:
        for part in reversed(parts[:-1]):
            if part.id != cursor:
                entry_before = part.id
                break
            cursor_i += 1
    blocks: list[str] = []
    tail = ""
    if markdown:
        # One flush for the whole text: which blocks are frozen depends on the text only, not
        # on when flushes happened, so this is the hub's state after the same parts
        # (live/markdown.py), at the cost of one render instead of one per part.
        stream = MarkdownStream()
        stream.feed("".join(texts))
        update = stream.flush()
        blocks = list(update.append)
        tail = update.tail
        if complete:
            tail = stream.final_tail()
    chunks = [part.chunk for part in parts]
    return Snapshot(
        len(parts), texts, cursor, cursor_i, entry_before, blocks, tail, complete, chunks
    )


def read_snapshot(
    run_id: str,
    key: str,
    *,
    markdown: bool = False,
    start_index: int | None = None,
    deadline: float | None = None,
) -> Snapshot | None:
    """What the stream holds now, read within ``deadline`` seconds (``SNAPSHOT_DEADLINE``), or
    ``None`` (turned off, inside an event loop, or nothing could be read)."""
    if deadline is None:
        deadline = get_config().snapshot_deadline
    if deadline <= 0:
        return None
    from trigger_django.runs import FINISHED_STATUSES, fetch_run

    # The run's state as {% run_status %} fetched it for this page (cached for a second), or
    # within RUN_STATE_DEADLINE: a finished run's page needs no socket at all.
    run = fetch_run(run_id)
    read = bounded_sync(_read, run_id, key, start_index, deadline)
    if read is None:
        return None
    parts, to_the_end = read
    complete = to_the_end and run is not None and run.status in FINISHED_STATUSES
    return snapshot_from_parts(parts, markdown=markdown, complete=complete)


async def _read(
    run_id: str,
    key: str,
    start_index: int | None,
    deadline: float,
    *,
    client: TriggerClient | None = None,
) -> tuple[list[StreamPart], bool]:
    """The parts read within ``deadline``, and whether the read reached the stream's end (on
    ``client``, or on a client of its own)."""
    if client is not None:
        return await _read_on(client, run_id, key, start_index, deadline)
    async with _client(deadline) as own:
        return await _read_on(own, run_id, key, start_index, deadline)


@contextlib.asynccontextmanager
async def _client(deadline: float) -> AsyncIterator[TriggerClient]:
    """A client of the configured Trigger.dev for reads of at most ``deadline`` seconds."""
    config = get_config()
    if not config.secret_key:
        raise UpstreamConfigurationError("No Trigger.dev secret key.")
    async with httpx.AsyncClient(timeout=deadline) as http:
        yield TriggerClient(config.api_url, secret_key=config.secret_key, http_client=http)


async def _read_on(
    client: TriggerClient, run_id: str, key: str, start_index: int | None, deadline: float
) -> tuple[list[StreamPart], bool]:
    parts: list[StreamPart] = []
    ended = False
    stream = client.read_stream(run_id, key, start_index=start_index)
    caught_up = asyncio.Event()
    stream.on_caught_up = caught_up.set

    async def consume() -> None:
        nonlocal ended
        async for part in stream:
            parts.append(part)
        ended = True  # the server ended the read: the stream was idle

    reading = asyncio.ensure_future(consume())
    waiting = asyncio.ensure_future(caught_up.wait())
    try:
        await asyncio.wait({reading, waiting}, timeout=deadline, return_when="FIRST_COMPLETED")
    finally:
        for task in (reading, waiting):
            task.cancel()
        results = await asyncio.gather(reading, waiting, return_exceptions=True)
        await stream.aclose()
    failure = results[0]
    if isinstance(failure, Exception) and not parts:
        raise failure
    return parts, ended or stream.caught_up


def read_snapshots(
    run_id: str,
    keys: Sequence[str],
    *,
    finished: bool,
    deadline: float | None = None,
) -> dict[str, Snapshot]:
    """What each of the run's streams ``keys`` holds now (``{% run_viewer %}``), read
    concurrently within one ``deadline`` for all of them (``SNAPSHOT_DEADLINE``). A stream that
    could not be read is missing from the result; all are when turned off or inside an event
    loop. ``finished``: the run had finished, so a stream read to its end is ``complete``."""
    if deadline is None:
        deadline = get_config().snapshot_deadline
    if deadline <= 0 or not keys:
        return {}
    # Each stream is one upstream request per page render: a run with many streams has the
    # first MAX_SNAPSHOT_STREAMS in the first HTML, and the others arrive on the socket.
    chosen = list(dict.fromkeys(keys))[:MAX_SNAPSHOT_STREAMS]
    reads = bounded_sync(_read_all, run_id, chosen, deadline)
    if reads is None:
        return {}
    return {
        key: snapshot_from_parts(parts, markdown=False, complete=finished and to_the_end)
        for key, (parts, to_the_end) in reads.items()
    }


async def _read_all(
    run_id: str, keys: list[str], deadline: float
) -> dict[str, tuple[list[StreamPart], bool]]:
    """Every stream of ``keys`` read at once on one client, each until it caught up or until the
    one deadline they share."""
    async with _client(deadline) as client:
        results = await asyncio.gather(
            *(_read(run_id, key, None, deadline, client=client) for key in keys),
            return_exceptions=True,
        )
    reads: dict[str, tuple[list[StreamPart], bool]] = {}
    for key, result in zip(keys, results, strict=True):
        if isinstance(result, BaseException):
            logger.info(
                "trigger_django: nothing of stream %r of run %s read at render time: %s",
                key,
                run_id,
                result,
            )
            continue
        reads[key] = result
    return reads
