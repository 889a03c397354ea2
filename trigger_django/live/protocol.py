"""The page ↔ consumer wire protocol (docs/stream-viewer.md): message parsing and validation,
close codes, and the encoding of outgoing frames.

Parts are encoded to JSON once, when the hub decodes them; a ``parts`` frame is then assembled by
joining those pre-encoded strings, so a part costs one ``json.dumps`` whatever the number of
viewers and sockets it reaches.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from trigger_django.client import APIStatusError, TriggerError, UpstreamUnavailableError
from trigger_django.upstream import UpstreamConfigurationError

__all__ = [
    "MAX_MESSAGE_CHARS",
    "MAX_PARTS_PER_FRAME",
    "MAX_SUBSCRIPTIONS",
    "Ack",
    "BadMessage",
    "CloseCode",
    "Position",
    "Subscribe",
    "Unsubscribe",
    "complete_message",
    "cursor_key",
    "cursor_position",
    "encode_part",
    "error_message",
    "parse_message",
    "parts_frame",
    "upstream_error",
]


class CloseCode:
    """WebSocket close codes the consumer uses (docs/stream-viewer.md)."""

    BAD_MESSAGE = 4400
    UNAUTHENTICATED = 4401
    FORBIDDEN = 4403
    NOT_FOUND = 4404
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013


#: Subscriptions one socket may hold at once (a page with more viewers is a mistake).
MAX_SUBSCRIPTIONS = 64
#: Parts per WebSocket frame (a soft bound: a frame holds whole batches of at most this many).
MAX_PARTS_PER_FRAME = 512
#: Longest browser message accepted; a subscribe with its ticket is well under 4 KB.
MAX_MESSAGE_CHARS = 16 * 1024

_SUB_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_CURSOR_RE = re.compile(r"\d{1,20}(?:-\d{1,20})?")
# The same alphabets as tickets.py, matched whole (`fullmatch`: a trailing newline is refused).
_RUN_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
_STREAM_KEY_RE = re.compile(r"[A-Za-z0-9_.:$-]{1,256}")

#: A total order on the parts of one feed: ``cursor_key(id) + (i,)``.
Position = tuple[int, ...]
#: ``i`` of a subscribe cursor: after every part of that id.
AFTER_ALL = 2**31


class BadMessage(Exception):
    """A browser message that does not follow the schema; closes the socket with 4400."""


def cursor_key(cursor: str) -> tuple[int, ...]:
    """Order cursors: v2 seq numbers (``"17"``) and v1 Redis ids (``"1735689600000-3"``)."""
    try:
        return tuple(int(piece) for piece in cursor.split("-"))
    except ValueError:
        return (-1,)


def cursor_position(cursor: str | None) -> Position:
    """The position just after every part of ``cursor`` (``()``: before the first part)."""
    if cursor is None:
        return ()
    return (*cursor_key(cursor), AFTER_ALL)


def is_cursor(value: str) -> bool:
    return _CURSOR_RE.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class Subscribe:
    sub: str
    ticket: object
    run_id: str
    key: str
    timeout: int | None
    start_index: int | None
    cursor: str | None
    #: ``"stream"``: one output stream (``key``); ``"run"``: the run's state (no ``key``).
    feed: str = "stream"
    #: Render object parts on the server with the ticket's part templates (``{% run_viewer %}``).
    render_parts: bool = False
    #: Render the text as markdown on the server (``{% stream_viewer render="markdown" %}``).
    render_markdown: bool = False


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    sub: str


@dataclass(frozen=True, slots=True)
class Ack:
    sub: str
    cursor: str


Message = Subscribe | Unsubscribe | Ack


def parse_message(text: str | None) -> Message:
    """Parse one browser frame; raise :class:`BadMessage` saying what is wrong with it."""
    if text is None:
        raise BadMessage("binary frames are not part of the protocol")
    if len(text) > MAX_MESSAGE_CHARS:
        raise BadMessage(f"a message must be at most {MAX_MESSAGE_CHARS} characters")
    try:
        content = json.loads(text)
    except RecursionError:
        raise BadMessage("the message is nested too deeply") from None
    except ValueError:
        raise BadMessage("the message is not JSON") from None
    if not isinstance(content, dict):
        raise BadMessage("a message must be a JSON object")
    kind = content.get("type")
    if kind == "ack":
        cursor = content.get("cursor")
        if not isinstance(cursor, str) or not is_cursor(cursor):
            raise BadMessage("ack needs a string 'cursor' such as '17' or '1735689600000-0'")
        return Ack(_sub_id(content), cursor)
    if kind == "unsubscribe":
        return Unsubscribe(_sub_id(content))
    if kind == "subscribe":
        return _subscribe(content)
    raise BadMessage(f"unknown message type {kind!r}"[:200])


def _subscribe(content: dict[str, Any]) -> Subscribe:
    sub = _sub_id(content)
    run_id, key = content.get("run_id"), content.get("key")
    if not isinstance(run_id, str) or not _RUN_ID_RE.fullmatch(run_id):
        raise BadMessage("subscribe needs a string 'run_id' such as 'run_abc123'")
    feed = content.get("feed", "stream")
    if feed == "run":
        if key is not None:
            raise BadMessage("a run subscription ('feed': 'run') takes no 'key'")
        cursor = content.get("cursor")
        if cursor is not None and not (isinstance(cursor, str) and is_cursor(cursor)):
            raise BadMessage("'cursor' must be a part id such as '17'")
        return Subscribe(sub, content.get("ticket"), run_id, "", None, None, cursor, "run")
    if feed != "stream":
        raise BadMessage("'feed' must be 'stream' or 'run'")
    render = content.get("render")
    if render not in (None, "parts", "markdown"):
        raise BadMessage("'render' must be 'parts' or 'markdown' when given")
    if not isinstance(key, str) or not _STREAM_KEY_RE.fullmatch(key) or key == ".":
        raise BadMessage("subscribe needs a string 'key' (letters, digits, '_-.:$')")
    if ".." in key:
        raise BadMessage("a stream 'key' must not contain '..'")
    timeout = _optional_int(content, "timeout", minimum=1, maximum=600)
    start_index = _optional_int(content, "start_index", minimum=0, maximum=2**53)
    cursor = content.get("cursor")
    if cursor is not None and not (isinstance(cursor, str) and is_cursor(cursor)):
        raise BadMessage("'cursor' must be a stream part id such as '17' or '1735689600000-0'")
    return Subscribe(
        sub,
        content.get("ticket"),
        run_id,
        key,
        timeout,
        start_index,
        cursor,
        "stream",
        render == "parts",
        render == "markdown",
    )


def _sub_id(content: dict[str, Any]) -> str:
    sub_id = content.get("sub")
    if not isinstance(sub_id, str) or not _SUB_ID_RE.fullmatch(sub_id):
        raise BadMessage("'sub' must be a short string id (1-64 of A-Za-z0-9_.:-)")
    return sub_id


def _optional_int(content: dict[str, Any], name: str, *, minimum: int, maximum: int) -> int | None:
    value = content.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise BadMessage(f"{name!r} must be an integer between {minimum} and {maximum}")
    return value


# --- server → browser -----------------------------------------------------------------------

_dumps = json.JSONEncoder(separators=(",", ":")).encode


def encode_part(part_id: str, chunk: Any, timestamp: int, i: int) -> str:
    """One part as it appears in a ``parts`` frame, encoded once."""
    wire: dict[str, Any] = {"id": part_id, "chunk": chunk, "timestamp": timestamp}
    if i:
        wire["i"] = i
    return _dumps(wire)


def parts_frame(batches: Iterable[tuple[str, Iterable[str], bool]]) -> str:
    """A ``parts`` frame from ``(sub, encoded parts, ack requested)`` batches."""
    streams = []
    for sub, parts, ack in batches:
        tail = '],"ack":true}' if ack else "]}"
        streams.append('{"sub":' + _dumps(sub) + ',"parts":[' + ",".join(parts) + tail)
    return '{"type":"parts","streams":[' + ",".join(streams) + "]}"


def complete_message(sub: str) -> str:
    return _dumps({"type": "complete", "sub": sub})


def error_message(sub: str, status: int, message: str, *, retry_after: float | None = None) -> str:
    wire: dict[str, Any] = {"type": "error", "sub": sub, "status": status, "message": message}
    if retry_after is not None:
        wire["retry_after"] = retry_after
    return _dumps(wire)


def subscribed_message(sub: str, ticket: str) -> str:
    return _dumps({"type": "subscribed", "sub": sub, "ticket": ticket})


def ticket_message(sub: str, ticket: str) -> str:
    return _dumps({"type": "ticket", "sub": sub, "ticket": ticket})


def upstream_error(exc: BaseException, run_id: str, key: str) -> tuple[int, str]:
    """The one mapping from an upstream failure to the ``(status, message)`` a viewer sees."""
    if isinstance(exc, APIStatusError):
        status, detail = exc.status, exc.message
    elif isinstance(exc, UpstreamUnavailableError):
        status, detail = exc.status or 503, str(exc)
    elif isinstance(exc, UpstreamConfigurationError):
        status, detail = 503, str(exc)
    elif isinstance(exc, TriggerError):
        status, detail = 502, str(exc)
    else:
        return 500, f"Could not read stream {key!r} of run {run_id}: internal error in the server."
    text = (
        f"Could not read stream {key!r} of run {run_id}: Trigger.dev answered "
        f"{status}" + (f" ({detail})" if detail else "") + "."
    )
    return status, text
