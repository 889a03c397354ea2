"""Helpers for the live-path tests: real sockets through the real auth middleware, a real
emulator upstream (fixtures in tests/conftest.py, section "Live path")."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from trigger_django.live.hub import get_hub
from trigger_django.routing import websocket_urlpatterns
from trigger_django.tickets import make_ticket

WS_PATH = "/trigger/ws/"
application = AuthMiddlewareStack(URLRouter(websocket_urlpatterns))


async def session_cookie(user: Any) -> tuple[Client, bytes]:
    client = Client()
    await sync_to_async(client.force_login)(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    return client, f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()


async def connect(user: Any | None, *, cookie: bytes | None = None) -> WebsocketCommunicator:
    headers = []
    if user is not None and cookie is None:
        _, cookie = await session_cookie(user)
    if cookie is not None:
        headers.append((b"cookie", cookie))
    communicator = WebsocketCommunicator(application, WS_PATH, headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    return communicator


def subscribe_message(
    user: Any, run_id: str, key: str = "default", *, sub: str = "s1", **extra: Any
) -> dict[str, Any]:
    return {
        "type": "subscribe",
        "sub": sub,
        "ticket": make_ticket(user_pk=user.pk, run_id=run_id, key=key),
        "run_id": run_id,
        "key": key,
        "timeout": 1,
        **extra,
    }


async def expect_close(communicator: WebsocketCommunicator, code: int) -> None:
    message = await communicator.receive_output(timeout=5)
    assert message == {"type": "websocket.close", "code": code}


def upstream_requests_for(emulator: Any, run_id: str) -> list[dict[str, Any]]:
    return [r for r in emulator.requests() if run_id in r["path"]]


def stream_reads_for(emulator: Any, run_id: str) -> list[dict[str, Any]]:
    """Reads of the run's output streams (not of its run shape, which streams follow)."""
    return [
        r
        for r in upstream_requests_for(emulator, run_id)
        if r["method"] == "GET" and r["path"].startswith("/realtime/v1/streams/")
    ]


def reads_from_the_start(emulator: Any, run_id: str) -> list[dict[str, Any]]:
    """Stream reads without a resume cursor: not the client's reconnects after a drop (which
    resume with ``Last-Event-ID``), so the count does not depend on the machine's load."""
    return [r for r in stream_reads_for(emulator, run_id) if "last-event-id" not in r["headers"]]


async def collect(
    communicator: WebsocketCommunicator,
    *,
    until: Callable[[dict[str, Any]], bool],
    ack: bool | str = True,
    limit: float = 10,
) -> list[dict[str, Any]]:
    """Receive messages until ``until(message)``. ``ack=True`` acknowledges every batch,
    ``ack="requested"`` only those the server marks ``"ack": true`` (what the page does)."""
    messages = []
    async with asyncio.timeout(limit):
        while True:
            message = await communicator.receive_json_from(timeout=limit)
            messages.append(message)
            if ack and message["type"] == "parts":
                for batch in message["streams"]:
                    if ack is True or batch.get("ack"):
                        await communicator.send_json_to(
                            {"type": "ack", "sub": batch["sub"], "cursor": batch["parts"][-1]["id"]}
                        )
            if until(message):
                return messages


def parts_of(messages: list[dict[str, Any]], sub: str = "s1") -> list[dict[str, Any]]:
    return [
        part
        for message in messages
        if message["type"] == "parts"
        for batch in message["streams"]
        if batch["sub"] == sub
        for part in batch["parts"]
    ]


def after_terminals(count: int) -> Callable[[dict[str, Any]], bool]:
    """Stop after ``count`` complete/error messages, whatever their subscriptions."""
    seen: list[dict[str, Any]] = []

    def until(message: dict[str, Any]) -> bool:
        if message["type"] in ("complete", "error"):
            seen.append(message)
        return len(seen) == count

    return until


def terminal(sub: str = "s1") -> Callable[[dict[str, Any]], bool]:
    return lambda m: m["type"] in ("complete", "error") and m.get("sub") == sub


async def wait_until(predicate: Callable[[], bool], limit: float = 5) -> None:
    # Task and pool state have no event to wait on: poll them, bounded.
    async with asyncio.timeout(limit):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def consumer_tasks() -> list[asyncio.Task[Any]]:
    return [
        t
        for t in asyncio.all_tasks()
        if t.get_name().startswith("trigger_django:") and not t.done()
    ]


def feed_readers() -> set[str]:
    names = {t.get_name() for t in consumer_tasks()}
    return {name for name in names if name.startswith("trigger_django:feed")}


def pool_busy() -> int:
    """Connections of the shared httpx pools that are not idle (open requests)."""
    from trigger_django.upstream import _http_clients

    pools = _http_clients.get(asyncio.get_running_loop(), {}).values()
    return sum(
        1
        for client in pools
        for connection in client._transport._pool.connections  # type: ignore[attr-defined]
        if not connection.is_idle()
    )


def no_feeds() -> bool:
    return not get_hub().feeds
