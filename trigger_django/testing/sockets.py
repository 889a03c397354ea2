"""Open the stream consumer's WebSocket as a logged-in user, and subscribe viewers to it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = ["StreamRead", "StreamSocket", "SubscriptionRefused", "open_stream_socket"]


class SubscriptionRefused(Exception):
    """The consumer closed the socket (``code``) or answered the subscribe with an error."""

    def __init__(self, message: str, *, code: int | None = None, status: int | None = None):
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass
class StreamRead:
    """What one viewer received: its chunks in order, and how the stream ended."""

    chunks: list[Any] = field(default_factory=list)
    parts: list[dict[str, Any]] = field(default_factory=list)
    #: The ``complete`` or ``error`` message, or ``None`` if reading stopped before the end.
    end: dict[str, Any] | None = None

    @property
    def text(self) -> str:
        """The chunks joined as text (string chunks as they are, others as JSON)."""
        import json

        return "".join(c if isinstance(c, str) else json.dumps(c) for c in self.chunks)


class StreamSocket:
    """One page's socket: ``await socket.subscribe(run_id, "ai-output")``, then
    ``await socket.read(sub)``. Parts are acknowledged as a browser would."""

    def __init__(self, communicator: Any, user: Any) -> None:
        self.communicator = communicator
        self.user = user
        self._count = 0
        #: Messages received for subscriptions other than the one being read.
        self._held: list[dict[str, Any]] = []
        self.closed_with: int | None = None

    async def receive(self, limit: float = 10) -> dict[str, Any]:
        """The next message (a close raises :class:`SubscriptionRefused`)."""
        if self._held:
            return self._held.pop(0)
        output = await self.communicator.receive_output(timeout=limit)
        if output["type"] == "websocket.close":
            self.closed_with = output.get("code")
            raise SubscriptionRefused(
                f"The consumer closed the socket with code {self.closed_with}.",
                code=self.closed_with,
            )
        import json

        message: dict[str, Any] = json.loads(output["text"])
        return message

    async def subscribe(
        self,
        run_id: str,
        key: str = "default",
        *,
        sub: str | None = None,
        ticket: str | None = None,
        idle_timeout: int | None = 1,
        start_index: int | None = None,
        wait: bool = True,
    ) -> str:
        """Subscribe a viewer of ``key`` of ``run_id`` with a ticket for this socket's user (or
        ``ticket``); returns the subscription id once the consumer answered ``subscribed``.
        ``idle_timeout`` is the viewer's idle timeout in seconds (the tag's ``timeout=``)."""
        from asgiref.sync import sync_to_async

        from trigger_django.tickets import make_ticket

        self._count += 1
        sub = sub or f"s{self._count}"
        if ticket is None:
            user_pk = None if self.user is None else self.user.pk
            ticket = await sync_to_async(make_ticket)(user_pk=user_pk, run_id=run_id, key=key)
        message: dict[str, Any] = {
            "type": "subscribe",
            "sub": sub,
            "ticket": ticket,
            "run_id": run_id,
            "key": key,
        }
        if idle_timeout is not None:
            message["timeout"] = idle_timeout
        if start_index is not None:
            message["start_index"] = start_index
        await self.communicator.send_json_to(message)
        if wait:
            while True:
                answer = await self.receive()
                if answer.get("sub") != sub:
                    self._held.append(answer)
                elif answer["type"] == "subscribed":
                    break
                elif answer["type"] == "error":
                    raise SubscriptionRefused(
                        str(answer.get("message")), status=answer.get("status")
                    )
                else:
                    self._held.append(answer)
        return sub

    async def read(self, sub: str, *, limit: float = 30) -> StreamRead:
        """Receive (and acknowledge) ``sub``'s parts until its ``complete`` or ``error``."""
        result = StreamRead()
        others: list[dict[str, Any]] = []
        async with asyncio.timeout(limit):
            while True:
                message = await self.receive(limit)
                if message["type"] == "parts":
                    for batch in message["streams"]:
                        await self.communicator.send_json_to(
                            {"type": "ack", "sub": batch["sub"], "cursor": batch["parts"][-1]["id"]}
                        )
                        if batch["sub"] == sub:
                            result.parts.extend(batch["parts"])
                            result.chunks.extend(part["chunk"] for part in batch["parts"])
                        else:
                            others.append({"type": "parts", "streams": [batch]})
                elif message.get("sub") == sub and message["type"] in ("complete", "error"):
                    result.end = message
                    break
                else:
                    others.append(message)
        self._held.extend(others)
        return result

    async def unsubscribe(self, sub: str) -> None:
        await self.communicator.send_json_to({"type": "unsubscribe", "sub": sub})


@asynccontextmanager
async def open_stream_socket(
    user: Any,
    *,
    application: Any = None,
    path: str | None = None,
    headers: Sequence[tuple[bytes, bytes]] = (),
    origin: str = "http://testserver",
) -> AsyncIterator[StreamSocket]:
    """A ``WebsocketCommunicator`` on the stream consumer, logged in as ``user`` through a real
    session cookie (so the database must be usable from other threads: in pytest-django,
    ``@pytest.mark.django_db(transaction=True)``).

    ``application`` defaults to ``AuthMiddlewareStack(URLRouter(websocket_urlpatterns))``; pass
    your project's ASGI application to test it whole (``origin`` then passes the origin check).
    """
    from asgiref.sync import sync_to_async
    from channels.testing import WebsocketCommunicator
    from django.conf import settings
    from django.test import Client

    from trigger_django.conf import get_config
    from trigger_django.upstream import aclose_http_clients

    if application is None:
        from channels.auth import AuthMiddlewareStack
        from channels.routing import URLRouter

        from trigger_django.routing import websocket_urlpatterns

        application = AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
    all_headers = [(b"origin", origin.encode()), *headers]
    if user is not None:
        client = Client()
        await sync_to_async(client.force_login)(user)
        cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
        all_headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    communicator = WebsocketCommunicator(
        application, path or "/" + get_config().websocket_path, headers=all_headers
    )
    connected, code = await communicator.connect(timeout=10)
    if not connected:
        raise SubscriptionRefused(f"The socket was refused (close code {code}).", code=code)
    try:
        yield StreamSocket(communicator, user)
    finally:
        await communicator.disconnect()
        # The consumer's upstream reads used this loop's shared pool; the loop ends with the test.
        await aclose_http_clients()
