"""Markdown rendered on the server, once per stream and process (``render="markdown"``).

A hub source wrapping an output stream: every part gains ``"md"``, what the page does with it::

    {"n": 3, "append": ["<p>…</p>\\n"], "tail": "<p>hal…</p>\\n", "seq": 42}

``append`` holds the HTML of top-level blocks that became final (``trigger_django.markdown``'s
`MarkdownStream`), the blocks numbered ``n``, ``n + 1``, …; ``tail`` replaces the open tail.
``seq`` counts the stream's parts rendered so far (the version of ``tail``). The page keeps how
many blocks it holds and the ``seq`` of its tail: it appends only the blocks it lacks and takes a
tail only when it is not older than its own. Whatever the order in which a page got here, it
ends with the same HTML: the frozen blocks are the final document's top-level blocks (their
numbering does not depend on when flushes happened) and the last item's tail.

The rendering state lives in the source object, which the hub keeps for the feed's lifetime, so
every read of the feed shares it:

* the shared read renders each new part once (one flush per part; which blocks are frozen after
  a part depends on the text so far only, so the numbering at a given part is the same in every
  process and in the page's first HTML, see ``trigger_django.snapshot``);
* a read of parts already rendered (a viewer's catch-up read from an old cursor, the shared read
  reopened after an idle end) does not render them again: each carries the blocks it froze when
  it was rendered (kept as a count per part), with the tail of now;
* a fresh feed asked to start after a cursor (a viewer resuming on a process that has no
  rendering of this stream, after a deploy) reads the stream from its start to rebuild it; the
  hub drops the parts before the cursor, and the next part carries the blocks from the viewer's
  count on.

When the stream ends (idle, or its run finished), one more item follows the last part: the same
id and a position just after it, with ``"end": true``, no chunk, and the tail rendered as written
(unhealed), so the page's HTML is then exactly ``render_markdown()`` of the whole text.

A flush costs about the size of the open tail, and a pathological one (a huge unterminated
paragraph of emphasis) takes hundreds of milliseconds. A flush runs in a worker thread
(`RENDER_THREADS` of them, shared by every stream) when it has more than `INLINE_LIMIT`
characters to parse or when this stream's last flush took more than `INLINE_SECONDS` of CPU,
so that the event loop, and every other socket on it, goes on meanwhile; this stream's read
waits for it. Cheap flushes stay on the loop (a thread hop would cost more than they do), and a
read that has spent `INLINE_SECONDS` * 4 rendering on the loop without suspending (a burst of
parts already buffered) yields to it. A stream never has more than one render in flight (one
lock per rendering, shared by all its reads), and its parts keep their order. Giant open blocks
are re-rendered only as they grow by an eighth (`trigger_django.markdown.LARGE_TAIL`), so the
renders a stream needs stay linear in its length.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from trigger_django.live.hub import Item, Source
from trigger_django.live.protocol import Position
from trigger_django.markdown import MarkdownStream, RenderUpdate

__all__ = [
    "INLINE_LIMIT", "INLINE_SECONDS", "RENDER_THREADS", "MarkdownSource", "chunk_text", "md_wire",
]  # fmt: skip

_dumps = json.JSONEncoder(separators=(",", ":")).encode

#: A flush with more text than this to parse (characters) runs in a worker thread...
INLINE_LIMIT = 2_000
#: ... and so does one after a flush of the stream that took more CPU than this (seconds).
INLINE_SECONDS = 0.005
#: Worker threads for those renders, shared by every stream of the process.
RENDER_THREADS = 2

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _render_executor() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(RENDER_THREADS, thread_name_prefix="trigger-markdown")
        return _executor


def _flush(stream: MarkdownStream, text: str) -> tuple[RenderUpdate, float]:
    """Feed a part's text and flush (on the event loop when it is cheap, else in a worker):
    the update and the CPU seconds it took."""
    began = time.thread_time()
    stream.feed(text)
    update = stream.flush()
    return update, time.thread_time() - began


def _final_tail(stream: MarkdownStream) -> str:
    return stream.final_tail()


def chunk_text(chunk: Any) -> str:
    """The text a chunk contributes: a string as it is, anything else as its JSON and a newline
    (as text mode shows it)."""
    return chunk if isinstance(chunk, str) else _dumps(chunk) + "\n"


def md_wire(n: int, append: list[str], tail: str, seq: int, *, end: bool = False) -> dict[str, Any]:
    wire: dict[str, Any] = {"n": n, "append": append, "tail": tail, "seq": seq}
    if end:
        wire["end"] = True
    return wire


class _Rendering:
    """The markdown of one feed so far."""

    __slots__ = (
        "blocks", "changes", "inline_spent", "last_id", "lock", "position", "seq", "slow",
        "stream", "tail",
    )  # fmt: skip

    def __init__(self) -> None:
        self.stream = MarkdownStream()
        #: Held while the stream renders: one render in flight, whichever read asks.
        self.lock = asyncio.Lock()
        #: Every frozen block's HTML, in order.
        self.blocks: list[str] = []
        #: ``(position, blocks frozen up to and including that part)`` for every part that
        #: froze some: which blocks a part carries, whichever read yields it.
        self.changes: list[tuple[Position, int]] = []
        self.tail = ""
        #: Parts rendered; the position and id of the last one.
        self.seq = 0
        self.position: Position = ()
        self.last_id: str | None = None
        #: The last flush took more than INLINE_SECONDS: the next one goes to a worker.
        self.slow = False
        #: CPU spent rendering on the loop since a read last yielded to it.
        self.inline_spent = 0.0

    async def render(self, item: Item, chunk: Any) -> tuple[int, int] | None:
        """Render a new part: the range of blocks it froze, or ``None`` when another read of
        the feed rendered it meanwhile. A large flush runs in a worker thread; should this read
        be cancelled meanwhile, the render still completes and counts (the stream keeps its
        lock until then), so no read ever sees a half-rendered stream."""
        await self.lock.acquire()
        if item.position <= self.position:
            self.lock.release()
            return None
        first = len(self.blocks)
        text = chunk_text(chunk)
        if not self.slow and self.stream.open_size + len(text) <= INLINE_LIMIT:
            try:
                update, spent = _flush(self.stream, text)
                self._apply(item, update, spent)
            finally:
                self.lock.release()
            self.inline_spent += spent
            if self.inline_spent > 4 * INLINE_SECONDS:
                self.inline_spent = 0.0
                await asyncio.sleep(0)  # parts in a burst: let the loop serve the others
            return first, len(self.blocks)
        self.inline_spent = 0.0
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(_render_executor(), _flush, self.stream, text)
        frozen: list[tuple[int, int]] = []

        def finished(done: asyncio.Future[tuple[RenderUpdate, float]]) -> None:
            try:
                if not done.cancelled() and done.exception() is None:
                    self._apply(item, *done.result())
                    frozen.append((first, len(self.blocks)))
            finally:
                self.lock.release()

        future.add_done_callback(finished)
        await asyncio.shield(future)
        return frozen[0]

    async def final_tail(self) -> str:
        """The open tail as written (unhealed), after any render in flight; a large one is
        rendered in a worker thread."""
        async with self.lock:
            if self.stream.open_size <= INLINE_LIMIT:
                return _final_tail(self.stream)
            loop = asyncio.get_running_loop()
            # Shielded: a cancelled read lets it finish before the lock goes (it only reads).
            future = loop.run_in_executor(_render_executor(), _final_tail, self.stream)
            try:
                return await asyncio.shield(future)
            except asyncio.CancelledError:
                await asyncio.wait([future])
                raise

    def _apply(self, item: Item, update: RenderUpdate, spent: float) -> None:
        self.slow = spent > INLINE_SECONDS
        if update.append:
            self.blocks.extend(update.append)
            self.changes.append((item.position, len(self.blocks)))
        self.tail = update.tail
        self.seq += 1
        self.position = item.position
        self.last_id = item.id

    def count_after(self, position: Position) -> int:
        """Blocks frozen up to and including the part at ``position``."""
        index = bisect.bisect_right(self.changes, position, key=_change_position)
        return self.changes[index - 1][1] if index else 0

    def count_before(self, position: Position) -> int:
        index = bisect.bisect_left(self.changes, position, key=_change_position)
        return self.changes[index - 1][1] if index else 0


def _change_position(change: tuple[Position, int]) -> Position:
    return change[0]


class MarkdownSource:
    """``base``'s parts with their markdown rendered (a hub ``Source``; see the module)."""

    def __init__(self, base: Source) -> None:
        self.base = base
        self.rendering = _Rendering()

    @property
    def key(self) -> tuple[Hashable, ...]:
        return (*self.base.key, "markdown")

    def describe_error(self, exc: BaseException) -> tuple[int, str]:
        return self.base.describe_error(exc)

    def idle_end_allowed(self) -> bool:
        allowed = getattr(self.base, "idle_end_allowed", None)
        return True if allowed is None else bool(allowed())

    async def open(self, resume: str | None, idle_timeout: int) -> AsyncIterator[Item]:
        state = self.rendering
        if state.seq == 0 and resume is not None:
            resume = None  # nothing rendered here yet: rebuild from the start
        last: Item | None = None
        items = self.base.open(resume, idle_timeout)
        try:
            async with contextlib.aclosing(items):  # type: ignore[type-var]
                async for item in items:
                    wire: dict[str, Any] = json.loads(item.data)
                    rendered = None
                    if item.position > state.position:
                        rendered = await state.render(item, wire.get("chunk"))
                    if rendered is not None:
                        first, end = rendered
                    else:  # rendered already: the blocks this part froze, and the tail of now
                        first, end = (
                            state.count_before(item.position),
                            state.count_after(item.position),
                        )
                    wire["md"] = md_wire(first, state.blocks[first:end], state.tail, state.seq)
                    last = item
                    data = _dumps(wire)
                    yield Item(item.position, item.id, data, len(data), item.resume)
        except Exception:
            if last is not None:
                yield await self._end_item(last)
            raise
        if last is not None:
            yield await self._end_item(last)

    async def _end_item(self, last: Item) -> Item:
        """The item after the last part of a read that ended: the tail as written."""
        state = self.rendering
        wire: dict[str, Any] = json.loads(last.data)
        wire.pop("chunk", None)
        wire.pop("md", None)
        tail = await state.final_tail()
        first = state.count_after(last.position)
        wire["md"] = md_wire(first, state.blocks[first:], tail, state.seq, end=True)
        data = _dumps(wire)
        return Item((*last.position, 1), last.id, data, len(data), last.resume)
