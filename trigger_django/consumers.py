"""The WebSocket consumer behind ``{% stream_viewer %}``: one socket per page, any number of
subscriptions, each an upstream reader of one Trigger.dev output stream.

The message schema and the close codes are documented in docs/stream-viewer.md. In short:

* every subscription is authorised (signed ticket, user, run, permission hook) before anything
  is sent upstream; a refusal closes the socket with 4400/4401/4403;
* parts are coalesced per socket with a leading-edge throttle (sent at once when nothing went
  out in the last ``THROTTLE_MS``, otherwise at the end of that window);
* the browser acknowledges the cursors it has applied, and a subscription stops pulling from
  upstream while ``MAX_UNACKED_PARTS`` are unacknowledged (daphne's ``send`` never waits, so this
  is the only backpressure there is);
* streams end in-band (``complete`` / ``error``); the server never closes right after data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import Counter, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from trigger_django.client import (
    APIStatusError,
    StreamPart,
    TriggerError,
    UpstreamUnavailableError,
)
from trigger_django.conf import get_config
from trigger_django.streams import ChunkCheck
from trigger_django.tickets import (
    Ticket,
    TicketError,
    check_authorized,
    load_ticket,
    make_ticket,
    token_claims,
)
from trigger_django.upstream import UpstreamConfigurationError, get_client, mint_public_token

__all__ = ["CloseCode", "StreamConsumer", "cursor_key"]

logger = logging.getLogger(__name__)


class CloseCode:
    """WebSocket close codes this consumer uses (docs/stream-viewer.md)."""

    BAD_MESSAGE = 4400
    UNAUTHENTICATED = 4401
    FORBIDDEN = 4403
    NOT_FOUND = 4404
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013


#: Subscriptions one socket may hold at once (a page with more viewers is a mistake).
MAX_SUBSCRIPTIONS = 64
#: Parts per WebSocket frame; a flush with more sends several frames, yielding in between.
MAX_PARTS_PER_FRAME = 512
#: Seconds of upstream silence beyond the idle timeout after which a connection counts as dead.
STALL_MARGIN = 30
#: A carried or minted token is replaced when it has less than this left, in seconds.
TOKEN_REFRESH_MARGIN = 60

_SUB_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_CURSOR_RE = re.compile(r"^\d{1,20}(-\d{1,20})?$")


def cursor_key(cursor: str) -> tuple[int, ...]:
    """Order cursors: v2 seq numbers (``"17"``) and v1 Redis ids (``"1735689600000-3"``)."""
    try:
        return tuple(int(piece) for piece in cursor.split("-"))
    except ValueError:
        return (-1,)


class BadMessage(Exception):
    """A browser message that does not follow the schema; closes the socket with 4400."""


class Refused(Exception):
    """A subscription that must not be served; closes the socket with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


@dataclass
class Subscription:
    sub_id: str
    ticket: Ticket
    timeout: int | None
    start_index: int | None
    cursor: str | None
    #: Parts read from upstream and not yet sent, in order.
    pending: list[dict[str, Any]] = field(default_factory=list)
    #: ``complete``/``error`` message, sent once ``pending`` is empty.
    terminal: dict[str, Any] | None = None
    #: Sent frames not yet acknowledged: ``(last cursor in the frame, parts in the frame)``.
    in_flight: deque[tuple[str, int]] = field(default_factory=deque)
    unacked: int = 0
    room: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    last_id: str | None = None
    occurrence: int = 0
    #: Cursor of the last part sent to the page.
    last_sent: str | None = None

    @property
    def outstanding(self) -> int:
        return self.unacked + len(self.pending)

    def add(self, part: StreamPart) -> None:
        # A v1 entry holding several lines yields several parts with one id: number them so
        # the browser can order and de-duplicate by (id, i).
        self.occurrence = self.occurrence + 1 if part.id == self.last_id else 0
        self.last_id = part.id
        wire: dict[str, Any] = {"id": part.id, "chunk": part.chunk, "timestamp": part.timestamp}
        if self.occurrence:
            wire["i"] = self.occurrence
        self.pending.append(wire)

    def acknowledge(self, cursor: str, window: int) -> None:
        key = cursor_key(cursor)
        if self.last_sent is None or key > cursor_key(self.last_sent):
            # An honest page acknowledges only what it received; anything else would reopen
            # the window without reading (and let a stalled socket buffer the whole stream).
            raise BadMessage(f"ack for cursor {cursor!r}, which was never sent")
        while self.in_flight and cursor_key(self.in_flight[0][0]) <= key:
            _, count = self.in_flight.popleft()
            self.unacked -= count
        if self.outstanding < window:
            self.room.set()


class StreamConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    """Serves the ``subscribe`` / ``unsubscribe`` / ``ack`` protocol of trigger-django.js."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.subscriptions: dict[str, Subscription] = {}
        #: Tokens minted for this socket, by run id: ``(token, expires_at)``.
        self.minted_tokens: dict[str, tuple[str, int]] = {}
        self.dirty = asyncio.Event()
        self.flusher: asyncio.Task[None] | None = None
        self.renewer: asyncio.Task[None] | None = None
        self.last_flush = float("-inf")
        self.config = get_config()

    async def connect(self) -> None:
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CloseCode.UNAUTHENTICATED)

    async def disconnect(self, code: int) -> None:
        await self.stop_all()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        try:
            await self.handle(content)
        except BadMessage as exc:
            logger.info("trigger_django: closing socket 4400: %s", exc)
            await self.refuse(CloseCode.BAD_MESSAGE)
        except Refused as exc:
            logger.info("trigger_django: closing socket %s: %s", exc.code, exc)
            await self.refuse(exc.code)

    async def decode_json(self, text_data: str) -> Any:
        try:
            return await super().decode_json(text_data)
        except ValueError:
            # Not JSON: answer like any other malformed message.
            return None

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None:
            await self.refuse(CloseCode.BAD_MESSAGE)
            return
        try:
            await super().receive(text_data=text_data)
        except Exception:
            logger.exception("trigger_django: unexpected error in the stream consumer")
            await self.refuse(CloseCode.INTERNAL_ERROR)

    async def refuse(self, code: int) -> None:
        await self.stop_all()
        await self.close(code=code)

    # --- messages from the browser --------------------------------------------------------------
    async def handle(self, content: Any) -> None:
        if not isinstance(content, dict):
            raise BadMessage("a message must be a JSON object")
        kind = content.get("type")
        if kind == "subscribe":
            await self.subscribe(content)
        elif kind == "unsubscribe":
            sub_id = _sub_id(content)
            subscription = self.subscriptions.pop(sub_id, None)
            if subscription is not None:
                await _cancel([subscription.task])
        elif kind == "ack":
            sub_id = _sub_id(content)
            cursor = content.get("cursor")
            if not isinstance(cursor, str) or len(cursor) > 64:
                raise BadMessage("ack needs a string 'cursor'")
            subscription = self.subscriptions.get(sub_id)
            if subscription is not None:
                subscription.acknowledge(cursor, self.config.max_unacked_parts)
        else:
            raise BadMessage(f"unknown message type {kind!r}")

    async def subscribe(self, content: dict[str, Any]) -> None:
        sub_id = _sub_id(content)
        if sub_id in self.subscriptions:
            raise BadMessage(f"subscription {sub_id!r} already exists")
        if len(self.subscriptions) >= MAX_SUBSCRIPTIONS:
            raise BadMessage(f"more than {MAX_SUBSCRIPTIONS} subscriptions on one socket")
        run_id, key = content.get("run_id"), content.get("key")
        if not isinstance(run_id, str) or not isinstance(key, str):
            raise BadMessage("subscribe needs string 'run_id' and 'key'")
        timeout = _optional_int(content, "timeout", minimum=1, maximum=600)
        start_index = _optional_int(content, "start_index", minimum=0, maximum=2**53)
        cursor = content.get("cursor")
        if cursor is not None and not (isinstance(cursor, str) and _CURSOR_RE.match(cursor)):
            raise BadMessage("'cursor' must be a stream part id such as '17' or '1735689600000-0'")

        # Authorisation, all before any upstream request.
        try:
            ticket = load_ticket(content.get("ticket"))
        except TicketError as exc:
            raise Refused(CloseCode.UNAUTHENTICATED, str(exc)) from None
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            raise Refused(CloseCode.UNAUTHENTICATED, "no session")
        if ticket.user_pk != str(user.pk):
            raise Refused(CloseCode.FORBIDDEN, "the ticket was issued to another user")
        if ticket.run_id != run_id or ticket.key != key:
            raise Refused(CloseCode.FORBIDDEN, "the ticket was issued for another run or stream")
        if not await check_authorized(user, run_id, "read"):
            raise Refused(CloseCode.FORBIDDEN, f"the permission hook refused run {run_id}")

        user_key = str(user.pk)
        limit = self.config.max_streams_per_user
        if _live_streams_by_user[user_key] >= limit:
            # Each live stream holds an upstream connection: one user must not take them all.
            await self.send_json(
                {
                    "type": "error",
                    "sub": sub_id,
                    "status": 429,
                    "message": f"Too many live streams: at most {limit} at once per user. "
                    "Close other pages with live streams and reload this one.",
                }
            )
            return

        subscription = Subscription(
            sub_id=sub_id, ticket=ticket, timeout=timeout, start_index=start_index, cursor=cursor
        )
        subscription.room.set()
        self.subscriptions[sub_id] = subscription
        if self.flusher is None:
            self.flusher = asyncio.create_task(self.flush_loop(), name="trigger_django:flush")
        if self.renewer is None:
            self.renewer = asyncio.create_task(self.renew_loop(), name="trigger_django:renew")
        subscription.task = asyncio.create_task(
            self.read_upstream(subscription), name=f"trigger_django:upstream:{sub_id}"
        )
        _live_streams_by_user[user_key] += 1
        # A done callback runs even for a task cancelled before it started.
        subscription.task.add_done_callback(lambda _: _release_stream(user_key))
        await self.send_json({"type": "subscribed", "sub": sub_id, "ticket": _renewed(ticket)})

    # --- upstream --------------------------------------------------------------------------------
    async def token_for(self, ticket: Ticket, *, fresh: bool = False) -> str:
        """A token that can read exactly this run: the ticket's while it is fresh, else minted."""
        now = time.time()
        if ticket.access_token and not fresh:
            claims = token_claims(ticket.access_token)
            if claims is not None and int(claims.get("exp", 0)) - now > TOKEN_REFRESH_MARGIN:
                return ticket.access_token
        minted = self.minted_tokens.get(ticket.run_id)
        if minted is None or fresh or minted[1] - now <= TOKEN_REFRESH_MARGIN:
            minted = await mint_public_token([f"read:runs:{ticket.run_id}"])
            self.minted_tokens[ticket.run_id] = minted
        return minted[0]

    async def read_upstream(self, subscription: Subscription) -> None:
        ticket = subscription.ticket
        try:
            token = await self.token_for(ticket)

            async def refresh_token() -> str:
                return await self.token_for(ticket, fresh=True)

            client = get_client(access_token=token)
            timeout = subscription.timeout or self.config.timeout_seconds
            stream: AsyncIterator[StreamPart] = client.read_stream(
                ticket.run_id,
                ticket.key,
                last_event_id=subscription.cursor,
                start_index=None if subscription.cursor else subscription.start_index,
                timeout_seconds=timeout,
                # The server ends a stream idle for `timeout`; silence well beyond that means
                # the connection died without a FIN, so reconnect (resuming from the cursor).
                stall_timeout=timeout + STALL_MARGIN,
                refresh_token=refresh_token,
            )
            # A defined stream's type is checked; a misfit is logged once and sent all the same.
            check = ChunkCheck.for_key(ticket.key, ticket.run_id)
            async with contextlib.aclosing(stream):  # type: ignore[type-var]
                while True:
                    await self.wait_for_room(subscription)
                    try:
                        part = await anext(stream)
                    except StopAsyncIteration:
                        break
                    check(part.chunk)
                    subscription.add(part)
                    self.dirty.set()
            subscription.terminal = {"type": "complete", "sub": subscription.sub_id}
        except asyncio.CancelledError:
            raise
        except APIStatusError as exc:
            subscription.terminal = _error(subscription, exc.status, exc.message)
        except UpstreamUnavailableError as exc:
            subscription.terminal = _error(subscription, exc.status or 503, str(exc))
        except UpstreamConfigurationError as exc:
            subscription.terminal = _error(subscription, 503, str(exc))
        except TriggerError as exc:
            subscription.terminal = _error(subscription, 502, str(exc))
        except Exception:
            logger.exception("trigger_django: upstream reader failed")
            subscription.terminal = _error(subscription, 500, "internal error in the server")
        self.dirty.set()

    async def wait_for_room(self, subscription: Subscription) -> None:
        window = self.config.max_unacked_parts
        while subscription.outstanding >= window:
            subscription.room.clear()
            await subscription.room.wait()

    # --- sending ---------------------------------------------------------------------------------
    async def flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        window = self.config.throttle_ms / 1000
        try:
            while True:
                await self.dirty.wait()
                # Leading edge: send at once if the last frame is older than the window;
                # otherwise coalesce everything that arrives until the window ends.
                delay = self.last_flush + window - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                self.dirty.clear()
                self.last_flush = loop.time()
                await self.send_pending()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("trigger_django: sending to the browser failed")
            await self.refuse_from_task(CloseCode.INTERNAL_ERROR)

    async def renew_loop(self) -> None:
        """Send fresh tickets at half their lifetime, so that a page open for longer than
        ``TICKET_MAX_AGE`` can still resubscribe after a network drop or a deploy. The session
        and the permission hook are checked again on every subscribe, as always."""
        interval = max(self.config.ticket_max_age / 2, 1)
        while True:
            await asyncio.sleep(interval)
            for subscription in list(self.subscriptions.values()):
                if subscription.terminal is None:
                    ticket = _renewed(subscription.ticket)
                    await self.send_json(
                        {"type": "ticket", "sub": subscription.sub_id, "ticket": ticket}
                    )

    async def send_pending(self) -> None:
        while True:
            batches: list[dict[str, Any]] = []
            budget = MAX_PARTS_PER_FRAME
            for subscription in self.subscriptions.values():
                if budget == 0:
                    break
                if not subscription.pending:
                    continue
                parts = subscription.pending[:budget]
                del subscription.pending[: len(parts)]
                budget -= len(parts)
                subscription.in_flight.append((parts[-1]["id"], len(parts)))
                subscription.last_sent = parts[-1]["id"]
                subscription.unacked += len(parts)
                batches.append({"sub": subscription.sub_id, "parts": parts})
            if not batches:
                break
            await self.send_json({"type": "parts", "streams": batches})
            # daphne's send never suspends: give the loop a turn between frames.
            await asyncio.sleep(0)
        for sub_id, subscription in list(self.subscriptions.items()):
            # The pop guards against an unsubscribe that came in while an earlier terminal
            # message was being sent.
            if (
                subscription.terminal is not None
                and not subscription.pending
                and self.subscriptions.pop(sub_id, None) is not None
            ):
                await self.send_json(subscription.terminal)

    async def refuse_from_task(self, code: int) -> None:
        """Close from inside the flusher: stop the readers (not this task), then close."""
        readers = [s.task for s in self.subscriptions.values()]
        self.subscriptions.clear()
        await _cancel([*readers, self.renewer])
        self.renewer = None
        self.flusher = None
        await self.close(code=code)

    async def stop_all(self) -> None:
        tasks: list[asyncio.Task[None] | None] = [s.task for s in self.subscriptions.values()]
        self.subscriptions.clear()
        tasks += [self.flusher, self.renewer]
        self.flusher = self.renewer = None
        await _cancel(tasks)


#: Upstream readers per user in this process (``MAX_STREAMS_PER_USER``).
_live_streams_by_user: Counter[str] = Counter()


def _release_stream(user_key: str) -> None:
    _live_streams_by_user[user_key] -= 1
    if _live_streams_by_user[user_key] <= 0:
        del _live_streams_by_user[user_key]


def _renewed(ticket: Ticket) -> str:
    """A fresh ticket for the same user, run and key (any carried token is left out: the
    consumer mints one when it needs to)."""
    return make_ticket(user_pk=ticket.user_pk, run_id=ticket.run_id, key=ticket.key)


def _error(subscription: Subscription, status: int, message: str) -> dict[str, Any]:
    ticket = subscription.ticket
    text = (
        f"Could not read stream {ticket.key!r} of run {ticket.run_id}: Trigger.dev answered "
        f"{status}" + (f" ({message})" if message else "") + "."
    )
    return {"type": "error", "sub": subscription.sub_id, "status": status, "message": text}


def _sub_id(content: dict[str, Any]) -> str:
    sub_id = content.get("sub")
    if not isinstance(sub_id, str) or not _SUB_ID_RE.match(sub_id):
        raise BadMessage("'sub' must be a short string id")
    return sub_id


def _optional_int(content: dict[str, Any], name: str, *, minimum: int, maximum: int) -> int | None:
    value = content.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise BadMessage(f"{name!r} must be an integer between {minimum} and {maximum}")
    return value


async def _cancel(tasks: list[asyncio.Task[None] | None]) -> None:
    """Cancel ``tasks`` and wait until they have finished."""
    running = [task for task in tasks if task is not None and not task.done()]
    for task in running:
        task.cancel()
    if running:
        await asyncio.wait(running)
