"""A byte-level ``text/event-stream`` decoder (WHATWG "event stream interpretation").

Why not httpx-sse's decoder: it decodes text chunk by chunk and then splits and parses every line
in Python, keeps the last event id across events, dispatches events that carry no ``data`` (a
``retry:``-only block arrives as an empty event) and keeps a leading byte-order mark. The official
Trigger.dev SDK parses with ``eventsource-parser``, whose events carry only the ``id`` set inside
that event block and which never dispatches data-less blocks. This decoder matches that, and works
on bytes: it splits complete lines first and decodes them in one go, so a multi-byte UTF-8
character split across network chunks is never cut (line terminators are ASCII and cannot occur
inside one), and the common case (``\\n`` only) is a single ``bytes.split``.

Line terminators are ``\\r\\n``, ``\\r`` and ``\\n``; a chunk ending in ``\\r`` may be followed by
the ``\\n`` of the same ``\\r\\n`` in the next chunk, which is then skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event. ``id`` is the ``id:`` field of this event block, or ``None``."""

    data: str
    event: str = "message"
    id: str | None = None


class SSEDecoder:
    """Feed raw body bytes with :meth:`feed`; it returns the events completed by them.

    An incomplete event at the end of the body is discarded, as the WHATWG rules require, so there
    is no ``flush``. ``retry`` holds the last valid ``retry:`` value (the reader does not act on it,
    like the official SDK).
    """

    __slots__ = ("_data", "_event", "_id", "_pending", "_skip_lf", "_started", "retry")

    def __init__(self) -> None:
        self._pending = b""  # the start of a line whose terminator has not arrived yet
        self._skip_lf = False  # the previous chunk ended in "\r": a leading "\n" belongs to it
        self._started = False  # a leading byte-order mark has been looked for
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if not chunk:
            return []
        if chunk[-1:] == b"\r":
            self._skip_lf = True
        buffer = self._pending + chunk if self._pending else chunk
        if not self._started:
            if len(buffer) < 3 and _BOM.startswith(buffer):
                self._pending = buffer  # may still turn out to be a byte-order mark
                return []
            self._started = True
            if buffer.startswith(_BOM):
                buffer = buffer[3:]
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        end = buffer.rfind(b"\n")
        if end == -1:
            self._pending = buffer
            return []
        self._pending = buffer[end + 1 :]
        return self._lines(buffer[:end].decode("utf-8", "replace").split("\n"))

    def _lines(self, lines: list[str]) -> list[ServerSentEvent]:
        events: list[ServerSentEvent] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    events.append(
                        ServerSentEvent("\n".join(data), self._event or "message", self._id)
                    )
                    data = self._data = []
                self._event = ""
                self._id = None
                continue
            if line.startswith("data:"):
                value = line[5:]
            elif line[0] == ":":
                continue  # a comment, e.g. a keep-alive ": ping"
            else:
                field, colon, value = line.partition(":")
                if colon and value.startswith(" "):
                    value = value[1:]
                if field == "event":
                    self._event = value
                elif field == "id":
                    if "\0" not in value:
                        self._id = value
                elif field == "retry":
                    if value.isascii() and value.isdigit():
                        self.retry = int(value)
                elif field == "data":  # "data" with no colon: an empty data line
                    data.append("")
                continue
            data.append(value[1:] if value.startswith(" ") else value)
        return events
