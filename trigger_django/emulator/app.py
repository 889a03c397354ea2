"""The emulator's ASGI application: the Trigger.dev realtime routes plus ``/_emulator/``.

Routing is a table (:mod:`trigger_django.emulator.routes`) of one handler module per resource
(:mod:`trigger_django.emulator.handlers`); :mod:`trigger_django.emulator.http` is the small
request/response layer they share. Every response gets the CORS headers the SDK needs, and every
request but ``/_emulator/`` ones is logged.
"""

from __future__ import annotations

from trigger_django.emulator.auth import AuthError, authenticate, bearer_token, unverified_scopes
from trigger_django.emulator.http import (
    HttpError,
    Message,
    Receive,
    Request,
    Response,
    Scope,
    Send,
    not_found,
)
from trigger_django.emulator.routes import ROUTER
from trigger_django.emulator.routing import Call
from trigger_django.emulator.sse import InjectedDrop
from trigger_django.emulator.state import EmulatorConfig, EmulatorState

EXPOSED_HEADERS = (
    "x-trigger-jwt, x-trigger-jwt-claims, X-Stream-Version, X-Last-Chunk-Index, "
    "electric-offset, electric-handle, electric-schema, electric-cursor"
)
ALLOWED_METHODS = "GET, HEAD, POST, PUT, DELETE, OPTIONS"
LOGGED_HEADERS = (
    "accept",
    "content-type",
    "content-length",
    "transfer-encoding",
    "last-event-id",
    "timeout-seconds",
    "x-trigger-stream-start",
    "x-trigger-realtime-streams-version",
    "x-stream-version",
    "x-client-id",
    "x-resume-from-chunk",
    "x-part-id",
    "trigger-version",
    "x-trigger-api-version",
    "x-trigger-source",
    "x-trigger-client",
    "idempotency-key",
    "origin",
    "access-control-request-method",
    "access-control-request-headers",
)


class EmulatorApp:
    """``EmulatorApp(config)`` is an ASGI 3 callable; ``app.state`` is the Python control API."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.state = EmulatorState(config)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        token = bearer_token(request.header("authorization"))
        log_entry = None
        if not request.path.startswith("/_emulator/"):
            log_entry = self.state.log_request(
                request.method,
                request.path,
                request.query,
                {name: request.headers[name] for name in LOGGED_HEADERS if name in request.headers},
                _credential_kind(token, self.config.secret_key),
                unverified_scopes(token),
                peer_port=_peer_port(scope),
            )

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                if b"access-control-allow-origin" not in names:
                    headers.append((b"access-control-allow-origin", b"*"))
                if b"access-control-expose-headers" not in names:
                    headers.append((b"access-control-expose-headers", EXPOSED_HEADERS.encode()))
                message = {**message, "headers": headers}
                if log_entry is not None:
                    log_entry.status = int(message["status"])
            await send(message)

        response = Response(send_with_cors)
        try:
            await self._dispatch(request, token, response)
        except HttpError as error:
            if isinstance(error.body, str):
                await response.text(error.status, error.body, error.headers)
            else:
                await response.json(error.status, error.body, error.headers)
        except AuthError as error:
            await response.json(error.status, {"error": error.message})
        except ConnectionResetError:
            return
        finally:
            if log_entry is not None:
                log_entry.open = False

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.state.closing.set()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _dispatch(self, request: Request, token: str | None, response: Response) -> None:
        if request.method == "OPTIONS":
            await self._preflight(request, response)
            return
        resolved = ROUTER.resolve(request.method, request.path)
        if resolved is None:
            if request.path.strip("/").split("/")[0] == "_emulator":
                # The control API answers only the secret key, even with a 404.
                authenticate(token, self.config.secret_key, allow_jwt=False)
            raise not_found()
        handler, params = resolved
        await handler(Call(self.config, self.state, request, response, token, params))

    async def _preflight(self, request: Request, response: Response) -> None:
        requested = request.header("access-control-request-headers")
        headers = [
            (b"access-control-allow-origin", b"*"),
            (b"access-control-allow-methods", ALLOWED_METHODS.encode()),
            (b"access-control-max-age", b"86400"),
        ]
        if requested:
            headers.append((b"access-control-allow-headers", requested.encode("latin-1")))
        await response.empty(204, headers)


def _credential_kind(token: str | None, secret_key: str) -> str:
    if token is None:
        return "none"
    if token == secret_key:
        return "secret"
    if token.startswith("tr_"):
        return "invalid-key"
    return "jwt" if unverified_scopes(token) is not None else "invalid"


__all__ = ["EmulatorApp", "InjectedDrop"]


def _peer_port(scope: Scope) -> int | None:
    client = scope.get("client")
    return int(client[1]) if client else None
