"""The page's side of the stream-viewer WebSocket protocol, as ``trigger-django.js`` speaks it.

Everything protocol-specific the bench and the soak rely on is here, with no I/O, so that a change
of the protocol (docs/stream-viewer.md) is a change of this one module:

* :class:`Page` is one page (one socket) holding any number of :class:`Viewer` s;
* ``page.on_open()`` gives the ``subscribe`` messages to send on a fresh socket (every unfinished
  viewer, from its cursor: a resume after a drop);
* ``page.receive(text, now)`` takes one server frame, queueing parts with their receive time;
* ``page.flush()`` applies the queued parts exactly like the JS ``applyPending``: in cursor order,
  skipping anything at or below the last applied ``(id, i)``, then one ``ack`` per viewer for the
  last received id; it returns the messages to send;
* ``page.on_close(code)`` says whether the JS would retry (and marks viewers failed otherwise).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

#: Close codes the page retries (trigger-django.js ``RETRYABLE_CLOSE_CODES``).
RETRYABLE_CLOSE_CODES = frozenset({1001, 1005, 1006, 1011, 1012, 1013, 1014})


def id_key(part_id: str) -> tuple[int, ...]:
    """v2 seq numbers ("17") and v1 Redis ids ("1735689600000-3"), compared numerically."""
    return tuple(int(piece or "0") for piece in str(part_id).split("-"))


def cursor_key(part_id: str, occurrence: int) -> tuple[tuple[int, ...], int]:
    """The JS ``compareCursors`` order: by id (missing pieces count as 0), then by ``i``."""
    key = id_key(part_id)
    return (key + (0,) * (2 - len(key)), occurrence)


@dataclass
class AppliedPart:
    id: str
    chunk: Any
    timestamp: Any
    #: ``time.time()`` when the frame carrying it arrived (before it was applied).
    received: float


@dataclass
class Viewer:
    """One ``[data-trigger-stream]`` element: a subscription and its page-side state."""

    sub: str
    ticket: str
    run_id: str
    key: str = "default"
    timeout: int | None = None
    start_index: int | None = None
    state: str = "connecting"
    cursor: tuple[str, int] | None = None
    entry_before: str | None = None
    pending: list[tuple[dict[str, Any], float]] = field(default_factory=list)
    terminal: dict[str, Any] | None = None
    subscribed: bool = False
    done: bool = False
    applied: list[AppliedPart] = field(default_factory=list)
    #: ``(status, message)`` of a terminal failure (in-band ``error`` or a refusing close code).
    error: tuple[int, str] | None = None
    completed: bool = False
    subscribes: int = 0

    def resume_cursor(self) -> str | None:
        # v2 ids name one part: resume after it. A v1 entry may hold more lines than were
        # applied and upstream resumes strictly after an id: resume after the entry before.
        if self.cursor is None:
            return None
        if "-" not in self.cursor[0]:
            return self.cursor[0]
        return self.entry_before

    def subscribe_message(self) -> dict[str, Any]:
        return {
            "type": "subscribe",
            "sub": self.sub,
            "ticket": self.ticket,
            "run_id": self.run_id,
            "key": self.key,
            "timeout": self.timeout,
            "start_index": self.start_index,
            "cursor": self.resume_cursor(),
        }

    def apply_pending(self) -> dict[str, Any] | None:
        """Apply what was received; return the ``ack`` to send, if any."""
        batch, self.pending = self.pending, []
        last_received: str | None = None
        current = None if self.cursor is None else cursor_key(*self.cursor)
        for part, received in batch:
            part_id = str(part["id"])
            occurrence = int(part.get("i") or 0)
            last_received = part_id
            key = cursor_key(part_id, occurrence)
            if current is not None and key <= current:
                continue  # a re-delivery after a reconnect
            if self.cursor is not None and self.cursor[0] != part_id:
                self.entry_before = self.cursor[0]
            self.cursor = (part_id, occurrence)
            current = key
            self.applied.append(
                AppliedPart(part_id, part.get("chunk"), part.get("timestamp"), received)
            )
        ack = None
        if last_received is not None and self.subscribed:
            ack = {"type": "ack", "sub": self.sub, "cursor": last_received}
        if self.terminal is not None:
            terminal, self.terminal = self.terminal, None
            self.done = True
            if terminal["type"] == "complete":
                self.completed = True
                self.state = "complete"
            else:
                self.error = (int(terminal.get("status") or 0), str(terminal.get("message")))
                self.state = "error"
        return ack


class ProtocolError(Exception):
    """The server sent something the page cannot read."""


class Page:
    """One page: one socket at a time, many viewers (the JS module's globals)."""

    def __init__(self) -> None:
        self.viewers: dict[str, Viewer] = {}
        self.dirty = False

    def add(self, viewer: Viewer) -> None:
        if viewer.sub in self.viewers:
            raise ValueError(f"Duplicate subscription id {viewer.sub!r}.")
        self.viewers[viewer.sub] = viewer

    def active(self) -> list[Viewer]:
        return [viewer for viewer in self.viewers.values() if not viewer.done]

    def on_open(self) -> list[dict[str, Any]]:
        messages = []
        for viewer in self.active():
            # Anything received but not yet applied goes first, so the cursor is exact.
            viewer.apply_pending()
            if viewer.done:
                continue
            viewer.subscribed = True
            viewer.subscribes += 1
            messages.append(viewer.subscribe_message())
        return messages

    def unsubscribe(self, viewer: Viewer) -> dict[str, Any] | None:
        message = None
        if viewer.subscribed and not viewer.done:
            message = {"type": "unsubscribe", "sub": viewer.sub}
        viewer.subscribed = False
        viewer.done = True
        return message

    def receive(self, text: str, now: float) -> None:
        try:
            message = json.loads(text)
        except ValueError as error:
            raise ProtocolError(f"Not JSON: {text[:80]!r}") from error
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "parts":
            for batch in message.get("streams") or []:
                target = self.viewers.get(batch.get("sub"))
                if target is None or target.done:
                    continue
                target.pending.extend((part, now) for part in batch["parts"])
            self.dirty = True
        elif kind == "subscribed":
            viewer = self.viewers.get(message.get("sub"))
            if viewer is not None and not viewer.done:
                if message.get("ticket"):
                    viewer.ticket = message["ticket"]
                viewer.state = "live"
        elif kind == "ticket":
            viewer = self.viewers.get(message.get("sub"))
            if viewer is not None and not viewer.done and message.get("ticket"):
                viewer.ticket = message["ticket"]
        elif kind in ("complete", "error"):
            viewer = self.viewers.get(message.get("sub"))
            if viewer is not None and not viewer.done:
                viewer.terminal = message
                self.dirty = True
        else:
            raise ProtocolError(f"Unknown message type {kind!r}: {text[:120]!r}")

    def flush(self) -> list[dict[str, Any]]:
        """Apply every viewer's queued parts (one animation frame); return the acks."""
        self.dirty = False
        messages = []
        for viewer in self.viewers.values():
            if not viewer.pending and viewer.terminal is None:
                continue
            ack = viewer.apply_pending()
            if ack is not None:
                messages.append(ack)
        return messages

    def on_close(self, code: int) -> bool:
        """The socket closed with ``code``: True when the page would reconnect and resubscribe."""
        for viewer in self.viewers.values():
            viewer.subscribed = False
        active = self.active()
        if not active:
            return False
        for viewer in active:
            viewer.apply_pending()
        if code in RETRYABLE_CLOSE_CODES:
            for viewer in self.active():
                viewer.state = "reconnecting"
            return True
        for viewer in self.active():
            viewer.done = True
            viewer.state = "error"
            viewer.error = (code, f"The live connection was closed ({code}).")
        return False
