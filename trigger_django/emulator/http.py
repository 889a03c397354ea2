"""The emulator's small HTTP layer over ASGI: requests read message by message, responses,
and error responses.

Request bodies are read one ASGI message at a time, so the SDK's long chunked ingest POST is
stored (and visible to readers) while it is still open.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import math
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from trigger_django.emulator.state import js_json

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JS_INT = re.compile(r"^\s*([+-]?\d+)")


class HttpError(Exception):
    """An error response: JSON when ``body`` is not a string, plain text otherwise."""

    def __init__(
        self, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body
        self.headers = headers or []


class ShuttingDown(Exception):
    """The server is stopping while a request body is still being received."""


def not_found() -> HttpError:
    return HttpError(404, {"error": "Not found"}, [(b"x-should-retry", b"false")])


def js_parse_int(value: str) -> float:
    """JavaScript's ``parseInt``: the leading integer, or NaN."""
    match = _JS_INT.match(value)
    return float(int(match.group(1))) if match else math.nan


class Request:
    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self.receive = receive
        self.method: str = scope["method"].upper()
        self.path: str = scope["path"]
        self.query: str = scope.get("query_string", b"").decode("latin-1")
        self.headers: dict[str, str] = {}
        for raw_name, raw_value in scope.get("headers", []):
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            self.headers[name] = f"{self.headers[name]}, {value}" if name in self.headers else value
        self.body_done = False

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    async def chunks(self, stop: asyncio.Event | None = None) -> Any:
        """The request body, one ASGI message at a time; ``stop`` ends it with ``ShuttingDown``."""
        while not self.body_done:
            if stop is None:
                message = await self.receive()
            else:
                receiving = asyncio.ensure_future(self.receive())
                stopping = asyncio.ensure_future(stop.wait())
                await asyncio.wait((receiving, stopping), return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                if not receiving.done():
                    receiving.cancel()
                    raise ShuttingDown
                message = receiving.result()
            if message["type"] == "http.disconnect":
                self.body_done = True
                raise ConnectionResetError("client disconnected during the request body")
            self.body_done = not message.get("more_body", False)
            body: bytes = message.get("body", b"")
            if body:
                yield body

    async def body(self, limit: int) -> bytes:
        received = bytearray()
        async for chunk in self.chunks():
            received += chunk
            if len(received) > limit:
                raise HttpError(413, {"error": "Request body too large"})
        return bytes(received)

    async def json(self, limit: int) -> Any:
        raw = await self.body(limit)
        try:
            return json.loads(raw) if raw.strip() else None
        except ValueError as error:
            raise HttpError(400, {"error": f"Request body is not valid JSON: {error}"}) from None


class Response:
    """Helpers that write a whole response through ``send``."""

    def __init__(self, send: Send) -> None:
        self.send = send

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    async def body(self, data: bytes, *, more: bool = False) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": more})

    async def json(
        self, status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        data = js_json(payload).encode()
        await self.start(
            status,
            [
                (b"content-type", b"application/json; charset=utf-8"),
                (b"content-length", str(len(data)).encode()),
                *(headers or []),
            ],
        )
        await self.body(data)

    async def text(
        self, status: int, text: str, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        data = text.encode()
        await self.start(
            status,
            [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(data)).encode()),
                *(headers or []),
            ],
        )
        await self.body(data)

    async def empty(self, status: int, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        await self.start(status, [(b"content-length", b"0"), *(headers or [])])
        await self.body(b"")


class Utf8Decoder:
    """Incremental UTF-8 decoding, so a character split across body reads is not mangled."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def decode(self, data: bytes) -> str:
        return str(self._decoder.decode(data))


async def wait_disconnect(request: Request) -> object:
    """Resolves when the client goes away (for handlers that no longer read the body)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return message


def unauthorized() -> HttpError:
    """The server's scope failure (§1.2)."""
    return HttpError(
        403,
        {
            "error": "Unauthorized",
            "code": "unauthorized",
            "param": "access_token",
            "type": "authorization",
        },
    )
