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
"""

from __future__ import annotations

import bisect
import contextlib
import json
from collections.abc import AsyncIterator, Hashable
from typing import Any

from trigger_django.live.hub import Item, Source
from trigger_django.live.protocol import Position
from trigger_django.markdown import MarkdownStream

__all__ = ["MarkdownSource", "chunk_text", "md_wire"]

_dumps = json.JSONEncoder(separators=(",", ":")).encode


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

    __slots__ = ("blocks", "changes", "last_id", "position", "seq", "stream", "tail")

    def __init__(self) -> None:
        self.stream = MarkdownStream()
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

    def add(self, item: Item, chunk: Any) -> None:
        self.stream.feed(chunk_text(chunk))
        update = self.stream.flush()
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
                    if item.position > state.position:
                        first = len(state.blocks)
                        state.add(item, wire.get("chunk"))
                        end = len(state.blocks)
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
                yield self._end_item(last)
            raise
        if last is not None:
            yield self._end_item(last)

    def _end_item(self, last: Item) -> Item:
        """The item after the last part of a read that ended: the tail as written."""
        state = self.rendering
        wire: dict[str, Any] = json.loads(last.data)
        wire.pop("chunk", None)
        wire.pop("md", None)
        first = state.count_after(last.position)
        tail = state.stream.final_tail()
        wire["md"] = md_wire(first, state.blocks[first:], tail, state.seq, end=True)
        data = _dumps(wire)
        return Item((*last.position, 1), last.id, data, len(data), last.resume)
