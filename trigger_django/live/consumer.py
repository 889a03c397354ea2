"""The WebSocket consumer behind ``{% stream_viewer %}``: lifecycle and dispatch only.

One socket per page carries any number of subscriptions; each rides a feed of the per-process
hub (``live.hub``), so viewers of one stream share one upstream read whatever socket they are on.
The protocol is in docs/stream-viewer.md; in short:

* a refusal concerning one subscription (bad, foreign or expired ticket, the permission hook,
  a limit) is an in-band ``error`` for that subscription; the socket closes only for what
  concerns it whole: a malformed message (4400) or no session (4401);
* every subscribe re-reads the session, and logging out closes the session's sockets;
* incoming messages cost no thread hop: ``dispatch`` does not close old database connections
  per message (nothing here touches the database outside the session check and the permission
  hook, which go through ``database_sync_to_async`` / ``sync_to_async`` themselves);
* subscribes are authorised in a short-lived task, so acks, unsubscribes and the disconnect
  never wait behind a permission hook; an idle socket has no task at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer

from trigger_django.conf import get_config
from trigger_django.live import limits, sessions
from trigger_django.live.hub import Source, Transformed, get_hub
from trigger_django.live.markdown import MarkdownSource
from trigger_django.live.parts import render_parts
from trigger_django.live.protocol import (
    MAX_SUBSCRIPTIONS,
    Ack,
    BadMessage,
    CloseCode,
    Subscribe,
    Unsubscribe,
    error_message,
    parse_message,
    subscribed_message,
    ticket_message,
)
from trigger_django.live.runs import FollowedOutputStream, RunFeed
from trigger_django.live.sources import OutputStream
from trigger_django.live.subscription import Outlet, State, Subscription
from trigger_django.tickets import (
    RUN_WIDE,
    Ticket,
    TicketError,
    check_authorized,
    load_ticket,
    make_ticket,
)

__all__ = ["StreamConsumer"]

logger = logging.getLogger("trigger_django.consumers")


class StreamConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    """Serves the ``subscribe`` / ``unsubscribe`` / ``ack`` protocol of trigger-django.js."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outlet: Outlet | None = None
        self.closing = False
        self.user_key = ""
        self.session_key: str | None = None
        self.digest: str | None = None
        #: Subscribes waiting for their checks, in order; ids of those, and of those cancelled.
        self.queued: deque[Subscribe] = deque()
        self.queued_ids: set[str] = set()
        self.cancelled: set[str] = set()
        self.authorizer: asyncio.Task[None] | None = None
        self.renewal: asyncio.TimerHandle | None = None
        self.rate: limits.RateLimit | None = None
        #: The ticket each live subscription was started with (renewed as it was).
        self.tickets: dict[str, Ticket] = {}

    # --- channels hooks ---------------------------------------------------------------------------
    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels' dispatch awaits `aclose_old_connections()` (a hop through the single
        # thread-sensitive executor) before every message; nothing here needs it.
        kind = message["type"]
        handler = None if kind.startswith("_") else getattr(self, kind.replace(".", "_"), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        if self.closing and message["type"] != "websocket.disconnect":
            return  # the socket is closing: nothing queued behind the close runs
        await handler(message)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        await self.disconnect(message.get("code", 1000))
        raise StopConsumer()

    async def connect(self) -> None:
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.refuse(CloseCode.UNAUTHENTICATED)
            return
        self.user_key = str(user.pk)
        session = self.scope.get("session")
        self.session_key = getattr(session, "session_key", None)
        config = get_config()
        hub = get_hub()
        self.outlet = Outlet(
            send=self.send_text,
            window_parts=config.max_unacked_parts,
            budget=config.max_unacked_bytes,
            on_finished=self.finished,
            schedule=hub.schedule,
        )
        if self.session_key:
            self.digest = sessions.session_digest(self.session_key)
            loop = asyncio.get_running_loop()

            def close_from_any_thread() -> None:
                loop.call_soon_threadsafe(self.logged_out)

            sessions.register(self.digest, id(self), close_from_any_thread)
            if self.channel_layer is not None:
                await self.channel_layer.group_add(
                    sessions.user_group(self.user_key), self.channel_name
                )

    async def disconnect(self, code: int) -> None:
        await self.stop_all(leave_group=True)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            message = parse_message(text_data)
            self.handle(message)
        except BadMessage as exc:
            logger.info("trigger_django: closing socket 4400: %s", exc)
            await self.refuse(CloseCode.BAD_MESSAGE)
        except Exception:
            logger.exception("trigger_django: unexpected error in the stream consumer")
            await self.refuse(CloseCode.INTERNAL_ERROR)

    async def trigger_django_logout(self, message: dict[str, Any]) -> None:
        """The channel layer's word that a session logged out (in another process)."""
        if message.get("session") == self.digest:
            await self.refuse(CloseCode.UNAUTHENTICATED)

    def logged_out(self) -> None:
        if not self.closing:
            self.closing = True
            asyncio.get_running_loop().create_task(
                self.refuse(CloseCode.UNAUTHENTICATED, force=True), name="trigger_django:logout"
            )

    async def send_text(self, text: str) -> None:
        await self.send(text_data=text)

    # --- messages from the browser ------------------------------------------------------------
    def handle(self, message: Subscribe | Unsubscribe | Ack) -> None:
        outlet = self.outlet
        if outlet is None:
            return
        if isinstance(message, Ack):
            subscription = outlet.subscriptions.get(message.sub)
            if subscription is not None:
                subscription.acknowledge(message.cursor)
        elif isinstance(message, Unsubscribe):
            if message.sub in self.queued_ids:
                self.cancelled.add(message.sub)
            subscription = outlet.subscriptions.pop(message.sub, None)
            if subscription is not None:
                self.leave(subscription)
        else:
            self.subscribe(message, outlet)

    def subscribe(self, message: Subscribe, outlet: Outlet) -> None:
        sub = message.sub
        if sub in outlet.subscriptions or sub in self.queued_ids:
            raise BadMessage(f"subscription {sub!r} already exists")
        config = get_config()
        if self.rate is None:
            self.rate = limits.RateLimit(config.subscribe_rate_per_socket)
        # Every subscribe counts, refused ones too.
        wait_socket = self.rate.take()
        wait_user = limits.user_rate(self.user_key, config.subscribe_rate_per_user).take()
        if wait_socket is not None or wait_user is not None:
            wait = max(wait_socket or 0, wait_user or 0)
            scope = "this page" if wait_socket is not None else "your account"
            self.reply(
                error_message(
                    sub,
                    429,
                    f"Too many subscriptions started from {scope}: try again in {wait:g} s.",
                    retry_after=wait,
                )
            )
            return
        if len(outlet.subscriptions) + len(self.queued) >= MAX_SUBSCRIPTIONS:
            self.reply(
                error_message(
                    sub,
                    429,
                    f"At most {MAX_SUBSCRIPTIONS} subscriptions per socket: this page has too "
                    "many live viewers.",
                )
            )
            return
        self.queued.append(message)
        self.queued_ids.add(sub)
        if self.authorizer is None:
            self.authorizer = asyncio.get_running_loop().create_task(
                self.authorize_queued(), name="trigger_django:authorize"
            )

    def reply(self, text: str) -> None:
        """Send ``text`` soon, in order with everything else this socket sends."""
        outlet = self.outlet
        if outlet is not None:
            outlet.replies.append(text)
            outlet.mark_dirty()

    # --- authorisation, off the dispatch path ---------------------------------------------------
    async def authorize_queued(self) -> None:
        try:
            while self.queued and not self.closing:
                message = self.queued[0]
                try:
                    if message.sub not in self.cancelled:
                        await self.start(message)
                finally:
                    # A refusal while checking it may have cleared the queue already.
                    if self.queued and self.queued[0] is message:
                        self.queued.popleft()
                    self.queued_ids.discard(message.sub)
                    self.cancelled.discard(message.sub)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("trigger_django: unexpected error authorising a subscription")
            await self.refuse(CloseCode.INTERNAL_ERROR, force=True)
        finally:
            self.authorizer = None

    async def start(self, message: Subscribe) -> None:
        sub = message.sub
        try:
            ticket = load_ticket(message.ticket)
        except TicketError as exc:
            self.reply(error_message(sub, 401, str(exc)))
            return
        # The session, again: a socket opened before a logout must not subscribe after it.
        if await sessions.session_user_key(self.session_key) != self.user_key:
            logger.info("trigger_django: closing socket 4401: the session ended")
            await self.refuse(CloseCode.UNAUTHENTICATED, force=True)
            return
        if ticket.user_pk != self.user_key:
            self.reply(error_message(sub, 403, "This viewer's ticket was issued to another user."))
            return
        if ticket.run_id != message.run_id or not (
            ticket.key == RUN_WIDE if message.feed == "run" else ticket.allows_stream(message.key)
        ):
            self.reply(
                error_message(
                    sub, 403, "This viewer's ticket was issued for another run or stream."
                )
            )
            return
        part_templates = ticket.part_templates_for(message.key)
        if message.render_parts and part_templates is None:
            self.reply(error_message(sub, 403, "This viewer's ticket names no part templates."))
            return
        user = self.scope["user"]
        try:
            allowed = await check_authorized(user, message.run_id, "read")
        except Exception:
            logger.exception("trigger_django: the AUTHORIZE hook failed")
            self.reply(error_message(sub, 500, "The server could not check your permission."))
            return
        if not allowed:
            self.reply(
                error_message(sub, 403, f"You are not allowed to view run {message.run_id}.")
            )
            return
        outlet = self.outlet
        if self.closing or outlet is None or sub in self.cancelled:
            return
        config = get_config()
        limit = config.max_streams_per_user
        if limits.live_by_user[self.user_key] >= limit:
            self.reply(
                error_message(
                    sub,
                    429,
                    f"Too many live streams: at most {limit} at once per user. "
                    "Close other pages with live streams and reload this one.",
                )
            )
            return
        subscription = Subscription(
            sub,
            outlet,
            timeout=message.timeout or config.timeout_seconds,
            cursor=message.cursor,
            user_key=self.user_key,
        )
        outlet.subscriptions[sub] = subscription
        limits.live_by_user[self.user_key] += 1
        self.tickets[sub] = ticket
        self.reply(subscribed_message(sub, _renewed(ticket)))
        get_hub().subscribe(
            _source(message, part_templates if message.render_parts else None), subscription
        )
        if self.renewal is None:
            self.arm_renewal()

    # --- subscriptions ending -------------------------------------------------------------------
    def finished(self, subscription: Subscription) -> None:
        """Its terminal message went out (called by the outlet while flushing)."""
        if self.outlet is not None and self.outlet.subscriptions.get(subscription.sub_id) is (
            subscription
        ):
            del self.outlet.subscriptions[subscription.sub_id]
        self.leave(subscription)

    def leave(self, subscription: Subscription) -> None:
        self.tickets.pop(subscription.sub_id, None)
        if subscription.user_key:
            limits.release(subscription.user_key)
            subscription.user_key = ""
        subscription.state = State.DONE
        get_hub().leave(subscription)

    # --- ticket renewal -------------------------------------------------------------------------
    def arm_renewal(self) -> None:
        """Send fresh tickets at half their lifetime, so that a page open for longer than
        ``TICKET_MAX_AGE`` can still resubscribe after a network drop or a deploy. A loop
        timer, not a task: an idle socket holds no task."""
        interval = max(get_config().ticket_max_age / 2, 1)
        self.renewal = asyncio.get_running_loop().call_later(interval, self.renew)

    def renew(self) -> None:
        self.renewal = None
        outlet = self.outlet
        if outlet is None or self.closing or not outlet.subscriptions:
            return
        for subscription in outlet.subscriptions.values():
            ticket = self.tickets.get(subscription.sub_id)
            if subscription.terminal is None and ticket is not None:
                outlet.replies.append(ticket_message(subscription.sub_id, _renewed(ticket)))
        outlet.mark_dirty()
        self.arm_renewal()

    # --- closing --------------------------------------------------------------------------------
    async def refuse(self, code: int, *, force: bool = False) -> None:
        """Close the socket with ``code``; nothing queued behind this runs."""
        if self.closing and not force:
            return
        await self.stop_all(leave_group=False)
        await self.close(code=code)

    async def stop_all(self, *, leave_group: bool) -> None:
        self.closing = True
        if self.renewal is not None:
            self.renewal.cancel()
            self.renewal = None
        authorizer, self.authorizer = self.authorizer, None
        if authorizer is not None and authorizer is not asyncio.current_task():
            authorizer.cancel()
        self.queued.clear()
        self.queued_ids.clear()
        outlet = self.outlet
        if outlet is not None:
            outlet.closed = True
            for subscription in list(outlet.subscriptions.values()):
                self.leave(subscription)
            outlet.subscriptions.clear()
            outlet.replies.clear()
        if self.digest is not None:
            sessions.unregister(self.digest, id(self))
            if leave_group and self.channel_layer is not None:
                await self.channel_layer.group_discard(
                    sessions.user_group(self.user_key), self.channel_name
                )
            if leave_group:
                self.digest = None


def _renewed(ticket: Ticket) -> str:
    """A fresh ticket for the same user, run and key (any carried token is left out: the
    consumer mints its own)."""
    return make_ticket(
        user_pk=ticket.user_pk,
        run_id=ticket.run_id,
        key=ticket.key,
        part_templates=ticket.part_templates,
    )


def _source(message: Subscribe, part_templates: str | None) -> Source:
    """The hub source a subscribe names: a run's state, or an output stream (through the
    cluster's relay with ``FANOUT``) that follows its run (``FOLLOW_RUNS``), its object parts
    rendered with ``part_templates`` when given, or its text rendered as markdown
    (``render: "markdown"``)."""
    if message.feed == "run":
        return RunFeed(message.run_id)
    config = get_config()
    stream = OutputStream(
        message.run_id, message.key, None if message.cursor else message.start_index
    )
    source: Source = stream
    if config.fanout is not None:  # TRIGGER_DJANGO["FANOUT"]: through the cluster's relay
        from trigger_django.live.fanout import fanout_source  # redis stays an optional extra

        source = fanout_source(stream)
    if config.follow_runs:
        source = FollowedOutputStream(source, message.run_id, message.key)
    if part_templates is not None:
        source = Transformed(source, f"parts:{part_templates}", render_parts(part_templates))
    elif message.render_markdown:
        source = MarkdownSource(source)
    return source
