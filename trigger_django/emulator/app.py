"""The emulator's plain ASGI application: the Trigger.dev realtime routes plus ``/_emulator/``.

Request bodies are read message by message, so the SDK's long chunked ingest POST is stored
(and visible to readers) while it is still open.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from trigger_django.emulator import shapes
from trigger_django.emulator.auth import (
    AuthError,
    Credentials,
    authenticate,
    authorized,
    bearer_token,
    expiry_seconds,
    sign_public_token,
    unverified_scopes,
)
from trigger_django.emulator.metadata import MetadataError, apply_operations, validate_body
from trigger_django.emulator.sse import AbortConnection, InjectedDrop, ReadSession, serve_stream
from trigger_django.emulator.state import (
    INPUT_STREAM_PREFIX,
    RUN_SHAPE_KEY,
    EmulatorConfig,
    EmulatorState,
    InputReceived,
    RecordTooLargeError,
    Run,
    StreamVersion,
    js_json,
    now_ms,
    parse_v2_last_event_id,
)
from trigger_django.emulator.tasks import execute, registered_task

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

INPUT_MAX_BYTES = 1024 * 1024
APPEND_MAX_BYTES = 512 * 1024
TRIGGER_MAX_BYTES = 3 * 1024 * 1024
CONTROL_MAX_BYTES = 1024 * 1024
METADATA_MAX_BYTES = 2 * 1024 * 1024
#: The server still accepts metadata for an hour after a run completed.
METADATA_WINDOW_MS = 60 * 60 * 1000
TRIGGER_TOKEN_TTL = 3600
PUBLIC_TOKEN_TTL = 900
STREAM_TARGETS = ("self", "parent", "root")
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

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.state.closing.set()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- routing ----------------------------------------------------------------------------

    async def _dispatch(self, request: Request, token: str | None, response: Response) -> None:
        method = request.method
        if method == "OPTIONS":
            await self._preflight(request, response)
            return
        segments = [segment for segment in request.path.split("/") if segment]

        if segments[:1] == ["_emulator"]:
            await self._control(request, token, response, segments[1:])
            return
        if (
            segments[:3] == ["api", "v1", "tasks"]
            and segments[4:] == ["trigger"]
            and method == "POST"
        ):
            await self._trigger(request, token, response, segments[3])
            return
        if segments[:4] == ["api", "v1", "auth", "jwt"] and method == "POST":
            if len(segments) == 5 and segments[4] == "claims":
                self._secret_only(token)
                await response.json(200, {"sub": self.config.env_id, "pub": True})
                return
            if len(segments) == 4:
                await self._mint_jwt(request, token, response)
                return
        if segments == ["api", "v1", "auth", "public-tokens"] and method == "POST":
            await self._public_token(request, token, response)
            return
        if (
            segments[:3] == ["api", "v1", "runs"]
            and segments[4:] == ["metadata"]
            and method == "PUT"
        ):
            await self._update_metadata(request, token, response, segments[3])
            return
        if segments[:3] == ["realtime", "v1", "runs"] and len(segments) == 4 and method == "GET":
            await self._run_shape(request, token, response, segments[3])
            return
        if segments[:3] == ["realtime", "v1", "streams"]:
            rest = segments[3:]
            if len(rest) == 3 and rest[1] == "input":
                if method in ("GET", "HEAD"):
                    await self._read_stream(request, token, response, rest[0], rest[2], True)
                    return
                if method == "POST":
                    await self._send_input(request, token, response, rest[0], rest[2])
                    return
            elif len(rest) == 2 and method in ("GET", "HEAD"):
                await self._read_stream(request, token, response, rest[0], rest[1], False)
                return
            elif len(rest) == 3:
                await self._write_stream(request, token, response, rest[0], rest[1], rest[2])
                return
            elif len(rest) == 4 and rest[3] == "append" and method == "POST":
                await self._append(request, token, response, rest[0], rest[1], rest[2])
                return
        raise not_found()

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

    def _secret_only(self, token: str | None) -> Credentials:
        return authenticate(token, self.config.secret_key, allow_jwt=False)

    def _run_or_404(self, run_id: str) -> Run:
        run = self.state.runs.get(run_id)
        if run is None:
            raise not_found()
        return run

    # -- triggering and tokens --------------------------------------------------------------

    async def _trigger(
        self, request: Request, token: str | None, response: Response, task_id: str
    ) -> None:
        credentials = authenticate(token, self.config.secret_key, allow_jwt=True)
        if not authorized(credentials, "trigger", [("tasks", task_id)]):
            raise _unauthorized()
        if credentials.one_time_use and _token_hash(credentials.token) in (
            self.state.used_one_time_tokens
        ):
            raise HttpError(
                422,
                {
                    "error": f"Cannot trigger {task_id} with a one-time use token as it has "
                    "already been used."
                },
            )
        body = await request.json(TRIGGER_MAX_BYTES)
        if not isinstance(body, dict):
            raise HttpError(
                400, {"error": 'Invalid request body: expected an object like {"payload": …}.'}
            )
        options = body.get("options") or {}
        if not isinstance(options, dict):
            raise HttpError(400, {"error": "Invalid request body: options must be an object."})
        raw_payload = body.get("payload")
        payload_type = str(options.get("payloadType") or "application/json")
        payload = _decode_payload(raw_payload, payload_type)
        tags = options.get("tags") or []
        tags = [tags] if isinstance(tags, str) else [str(tag) for tag in tags]
        idempotency_key = request.header("idempotency-key") or options.get("idempotencyKey")
        if credentials.one_time_use:
            self.state.used_one_time_tokens.add(_token_hash(credentials.token))

        run: Run | None = None
        is_cached = False
        if idempotency_key:
            cached_id = self.state.idempotency.get((task_id, str(idempotency_key)))
            run = self.state.runs.get(cached_id) if cached_id else None
            is_cached = run is not None
        if run is None:
            requested_version = request.header("x-trigger-realtime-streams-version")
            version: StreamVersion = (
                "v2" if requested_version == "v2" else self.config.stream_version
            )
            run = Run(
                id=self.state.new_run_id(),
                task_identifier=task_id,
                payload=payload,
                payload_type=payload_type,
                raw_payload=raw_payload,
                stream_version=version,
                tags=tags,
                idempotency_key=str(idempotency_key) if idempotency_key else None,
                number=len(self.state.runs) + 1,
            )
            self.state.runs[run.id] = run
            if idempotency_key:
                self.state.idempotency[(task_id, str(idempotency_key))] = run.id
            function = registered_task(task_id)
            if function is not None:
                run.task = asyncio.create_task(execute(function, run, self.config))

        scopes = [f"read:runs:{run.id}", f"write:inputStreams:{run.id}"]
        claims = {"sub": self.config.env_id, "pub": True, "scopes": scopes}
        jwt_token = sign_public_token(
            self.config.secret_key,
            env_id=self.config.env_id,
            scopes=scopes,
            expires_at=expiry_seconds(None, TRIGGER_TOKEN_TTL),
        )
        await response.json(
            200,
            {"id": run.id, "isCached": is_cached},
            [
                (b"x-trigger-jwt", jwt_token.encode()),
                (b"x-trigger-jwt-claims", js_json(claims).encode()),
            ],
        )

    async def _public_token(self, request: Request, token: str | None, response: Response) -> None:
        self._secret_only(token)
        body = await request.json(CONTROL_MAX_BYTES)
        if not isinstance(body, dict):
            raise HttpError(400, {"error": "Invalid request body: expected an object."})
        scopes = body.get("scopes")
        if (
            not isinstance(scopes, list)
            or not scopes
            or not all(isinstance(s, str) for s in scopes)
        ):
            raise HttpError(400, {"error": "scopes must be a non-empty array of strings."})
        try:
            expires_at = expiry_seconds(body.get("expirationTime"), PUBLIC_TOKEN_TTL)
        except ValueError as error:
            raise HttpError(400, {"error": str(error)}) from None
        minted = sign_public_token(
            self.config.secret_key,
            env_id=self.config.env_id,
            scopes=scopes,
            expires_at=expires_at,
            one_time_use=body.get("oneTimeUse") is True,
            realtime=body.get("realtime"),
        )
        await response.json(200, {"token": minted})

    async def _mint_jwt(self, request: Request, token: str | None, response: Response) -> None:
        self._secret_only(token)
        body = await request.json(CONTROL_MAX_BYTES) or {}
        if not isinstance(body, dict):
            raise HttpError(400, {"error": "Invalid request body: expected an object."})
        claims = body.get("claims") or {}
        scopes = claims.get("scopes") if isinstance(claims, dict) else None
        try:
            expires_at = expiry_seconds(body.get("expirationTime"), 3600)
        except ValueError as error:
            raise HttpError(400, {"error": str(error)}) from None
        minted = sign_public_token(
            self.config.secret_key,
            env_id=self.config.env_id,
            scopes=[str(s) for s in scopes] if isinstance(scopes, list) else None,
            expires_at=expires_at,
        )
        await response.json(200, {"token": minted})

    # -- run metadata -----------------------------------------------------------------------

    async def _update_metadata(
        self, request: Request, token: str | None, response: Response, run_id: str
    ) -> None:
        self._secret_only(token)
        length = request.header("content-length")
        if length is not None and length.strip().isdigit() and int(length) > METADATA_MAX_BYTES:
            raise HttpError(413, {"error": "Request body too large"})
        body = await request.json(METADATA_MAX_BYTES)
        try:
            operations, metadata = validate_body(body)
        except MetadataError as error:
            raise HttpError(400, {"error": f"Invalid request body: {error}."}) from None
        run = self.state.runs.get(run_id)
        if run is None:
            raise HttpError(404, {"error": "Task Run not found"})
        if run.completed_at is not None and run.completed_at < now_ms() - METADATA_WINDOW_MS:
            raise HttpError(422, {"error": "Cannot update metadata for a completed run"})
        if operations is not None:
            # As the server: operations win over a metadata object; none applied, no change.
            updated, applied = apply_operations(run.metadata, operations)
            if applied:
                run.replace_metadata(updated)
        elif js_json(metadata or {}) != js_json(run.metadata):
            run.replace_metadata(metadata or {})
        await response.json(200, {"metadata": run.metadata})

    # -- run subscriptions (Electric shape) -------------------------------------------------

    async def _run_shape(
        self, request: Request, token: str | None, response: Response, run_id: str
    ) -> None:
        credentials = authenticate(token, self.config.secret_key, allow_jwt=True)
        run = self._run_or_404(run_id)
        self._authorize_read(credentials, run)
        query = parse_qs(request.query)
        skip_columns = ",".join(query.get("skipColumns", [])).split(",")
        realtime = credentials.claims.get("realtime")
        if isinstance(realtime, dict) and isinstance(realtime.get("skipColumns"), list):
            # A token's realtime.skipColumns overrides the query parameter, as on the server.
            skip_columns = [str(column) for column in realtime["skipColumns"]]
        offset = query.get("offset", ["-1"])[0]
        handle = query.get("handle", [""])[0]
        live = query.get("live", [""])[0] == "true"

        if await self._shape_fault(run, response):
            return
        if offset == "-1" or not handle:
            await self._shape_snapshot(run, skip_columns, response)
            return
        if handle != run.shape_handle:
            # Electric answers a request for a handle that is not the shape's current one with
            # 409 must-refetch, naming the current handle.
            await self._must_refetch(run, response)
            return
        if not live:
            # A non-live catch-up with a handle re-emits the snapshot (the native server does).
            await self._shape_snapshot(run, skip_columns, response)
            return

        seen = shapes.revision_of(offset)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + shapes.LIVE_HOLD_SECONDS
        disconnected = asyncio.ensure_future(_wait_disconnect(request))
        closing = asyncio.ensure_future(self.state.closing.wait())
        try:
            while run.revision <= seen:
                remaining = deadline - loop.time()
                if remaining <= 0 or disconnected.done() or closing.done():
                    break
                changed = run.changed()
                await asyncio.wait(
                    (changed, disconnected, closing),
                    timeout=remaining,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                changed.cancel()
                if self.state.has_fault(run.id, RUN_SHAPE_KEY):
                    # Injected while this request was parked: it answers the fault.
                    await self._shape_fault(run, response)
                    return
        finally:
            disconnected.cancel()
            closing.cancel()
        if self.state.closing.is_set():
            raise AbortConnection("the emulator is shutting down")
        self.state.shape_cursor += 1
        headers = [
            (b"cache-control", b"no-store"),
            (b"electric-handle", run.shape_handle.encode()),
            (b"electric-cursor", str(self.state.shape_cursor).encode()),
            (b"access-control-expose-headers", b"*"),
        ]
        if run.revision > seen:
            headers.append((b"electric-offset", shapes.offset_for(run).encode()))
            body = [shapes.change_message(run, "update", skip_columns), shapes.UP_TO_DATE]
        else:
            headers.append((b"electric-offset", offset.encode()))
            body = [shapes.UP_TO_DATE]
        await response.json(200, body, headers)

    async def _shape_snapshot(self, run: Run, skip_columns: list[str], response: Response) -> None:
        headers = [
            (b"cache-control", b"no-store"),
            (b"electric-handle", run.shape_handle.encode()),
            (b"electric-offset", shapes.offset_for(run).encode()),
            (b"electric-schema", shapes.schema_header(skip_columns).encode()),
            (b"access-control-expose-headers", b"*"),
        ]
        body = [shapes.change_message(run, "insert", skip_columns), shapes.UP_TO_DATE]
        await response.json(200, body, headers)

    async def _must_refetch(self, run: Run, response: Response) -> None:
        await response.json(
            409,
            [shapes.MUST_REFETCH],
            [
                (b"cache-control", b"no-store"),
                (b"electric-handle", run.shape_handle.encode()),
                (b"access-control-expose-headers", b"*"),
            ],
        )

    async def _shape_fault(self, run: Run, response: Response) -> bool:
        """Answer an injected shape fault, if one is pending; ``True`` when one was."""
        fault = self.state.take_fault(run.id, RUN_SHAPE_KEY)
        if fault is None:
            return False
        if fault.kind == "must-refetch":
            # The shape is rotated: a new handle, which the client refetches from offset -1.
            run.shape_generation += 1
            await self._must_refetch(run, response)
        else:
            body = (
                fault.body
                if fault.body is not None
                else {"error": f"Injected fault: status {fault.status}"}
            )
            await response.json(fault.status, body)
        return True

    def _authorize_read(self, credentials: Credentials, run: Run) -> None:
        resources = [("runs", run.id), ("tasks", run.task_identifier)]
        resources += [("tags", tag) for tag in run.tags]
        if not authorized(credentials, "read", resources):
            raise _unauthorized()

    # -- reading streams --------------------------------------------------------------------

    async def _read_stream(
        self,
        request: Request,
        token: str | None,
        response: Response,
        run_id: str,
        key: str,
        is_input: bool,
    ) -> None:
        credentials = authenticate(token, self.config.secret_key, allow_jwt=True)
        run = self._run_or_404(run_id)
        self._authorize_read(credentials, run)
        timeout = self._timeout_seconds(request.header("timeout-seconds"), is_input)
        name = INPUT_STREAM_PREFIX + key if is_input else key
        stream = run.stream(name)
        version = run.stream_version

        last_event_id = request.header("last-event-id")
        if last_event_id:
            # S2 is read with clamp=true: a start beyond the tail starts at the tail.
            start = (
                min(parse_v2_last_event_id(last_event_id), len(stream))
                if version == "v2"
                else stream.v1_start(last_event_id)
            )
        elif (request.header("x-trigger-stream-start") or "").strip().lower() == "latest":
            start = len(stream)
        else:
            start = 0

        fault = self.state.take_fault(run.id, name)
        if fault is not None and fault.kind == "status":
            body = (
                fault.body
                if fault.body is not None
                else {"error": f"Injected fault: status {fault.status}"}
            )
            await response.json(fault.status, body)
            return

        headers = [
            (b"content-type", b"text/event-stream"),
            (b"cache-control", b"no-cache"),
            (b"connection", b"keep-alive"),
            (b"x-accel-buffering", b"no"),
        ]
        if version == "v2":
            headers += [(b"x-stream-version", b"v2"), (b"access-control-expose-headers", b"*")]
        await response.start(200, headers)
        if request.method == "HEAD":
            await response.body(b"")
            return
        # Flush the headers now: the SDK aborts a read whose headers take 30 s.
        await response.body(b"", more=True)

        disconnected = asyncio.ensure_future(_wait_disconnect(request))
        session = ReadSession(
            stream=stream,
            version=version,
            start=start,
            idle_timeout=float(timeout) if timeout else self.config.idle_timeout,
            ping_interval=self.config.ping_interval,
            disconnected=disconnected,
            closing=self.state.closing,
            fault=fault,
        )

        async def send_bytes(data: bytes) -> None:
            await response.body(data, more=True)

        try:
            await serve_stream(session, send_bytes)
        finally:
            disconnected.cancel()
        if not disconnected.done() or disconnected.cancelled():
            await response.body(b"")

    def _timeout_seconds(self, header: str | None, is_input: bool) -> int | None:
        if header is None:
            return None
        value = js_parse_int(header)
        if is_input:
            # The input-stream loader checks `!== undefined`, so NaN and 0 are errors there.
            if math.isnan(value) or value < 1 or value > 600:
                raise HttpError(400, "Invalid timeout seconds")
            return int(value)
        # The output-stream loader guards with `if (timeoutInSeconds && …)`: NaN and 0 are unset.
        if math.isnan(value) or value == 0:
            return None
        if value < 1:
            raise HttpError(400, "Timeout seconds must be greater than 0")
        if value > 600:
            raise HttpError(400, "Timeout seconds must be less than 600")
        return int(value)

    # -- writing streams --------------------------------------------------------------------

    def _write_target(self, run_id: str, target: str) -> Run:
        if target not in STREAM_TARGETS:
            raise HttpError(
                400, {"error": f"Invalid target {target!r}: expected self, parent or root."}
            )
        run = self.state.runs.get(run_id)
        if run is None:
            raise HttpError(404, "Run not found")
        if target != "self":
            # Emulated runs have no parent or root run.
            raise HttpError(404, "Target not found")
        return run

    async def _write_stream(
        self,
        request: Request,
        token: str | None,
        response: Response,
        run_id: str,
        target: str,
        key: str,
    ) -> None:
        self._secret_only(token)
        run = self._write_target(run_id, target)
        client_id = request.header("x-client-id") or "default"
        if request.method == "PUT":
            if run.is_finished:
                raise HttpError(400, "Cannot initialize a realtime stream on a completed run")
            run.add_realtime_stream(key)
            run.stream(key)
            # Always v1: the SDK's v2 writer talks S2S to S2, which the emulator does not speak.
            await response.json(202, {"version": "v1"})
            return
        if request.method == "HEAD":
            stream = run.streams.get(key)
            last = stream.last_chunk_index.get(client_id, -1) if stream else -1
            await response.empty(200, [(b"x-last-chunk-index", str(last).encode())])
            return
        if request.method != "POST":
            raise HttpError(405, "Only HEAD requests are allowed for this endpoint")
        await self._ingest(request, response, run, key, client_id)

    async def _ingest(
        self, request: Request, response: Response, run: Run, key: str, client_id: str
    ) -> None:
        has_body = "transfer-encoding" in request.headers or (
            request.header("content-length") not in (None, "0")
        )
        if not has_body:
            raise HttpError(400, "No body provided")
        resume = request.header("x-resume-from-chunk")
        chunk_index = 0
        if resume:
            parsed = js_parse_int(resume)
            if math.isnan(parsed) or parsed < 0:
                raise HttpError(400, f"Invalid X-Resume-From-Chunk header value: {resume}")
            chunk_index = int(parsed)
        run.add_realtime_stream(key)
        stream = run.stream(key)
        decoder = _Utf8Decoder()
        try:
            async for raw in request.chunks(stop=self.state.closing):
                text = decoder.decode(raw)
                if text:
                    stream.ingest(text, client_id=client_id, chunk_index=chunk_index)
                    chunk_index += 1
        except ConnectionResetError:
            return
        except RecordTooLargeError as error:
            # What S2 answers the SDK's v2 writer for such a record; the lines before it stay.
            await response.json(422, {"ok": False, "error": error.s2_message})
            return
        except ShuttingDown:
            # The SDK writer retries 503 with a HEAD resume query, as after a real restart.
            await response.json(503, {"error": "The emulator is shutting down"})
            return
        await response.empty(200)

    async def _append(
        self,
        request: Request,
        token: str | None,
        response: Response,
        run_id: str,
        target: str,
        key: str,
    ) -> None:
        self._secret_only(token)
        length = request.header("content-length")
        if length is None or not length.strip().isdigit() or int(length) > APPEND_MAX_BYTES:
            raise HttpError(413, {"error": "Request body too large"})
        run = self._write_target(run_id, target)
        if run.is_finished:
            raise HttpError(400, "Cannot append to a realtime stream on a completed run")
        part = (await request.body(APPEND_MAX_BYTES)).decode("utf-8", errors="replace")
        run.add_realtime_stream(key)
        try:
            run.stream(key).append_part(part, request.header("x-part-id") or None)
        except RecordTooLargeError as error:
            # The server checks the envelope's metered size before appending to S2.
            raise HttpError(413, {"ok": False, "error": error.message}) from None
        await response.json(200, {"ok": True})

    # -- input streams ----------------------------------------------------------------------

    async def _send_input(
        self, request: Request, token: str | None, response: Response, run_id: str, stream_id: str
    ) -> None:
        credentials = authenticate(token, self.config.secret_key, allow_jwt=True)
        length = request.header("content-length")
        if length is None or not length.strip().isdigit() or int(length) > INPUT_MAX_BYTES:
            raise HttpError(413, {"error": "Request body too large"})
        if not authorized(credentials, "write", [("inputStreams", run_id)]):
            raise _unauthorized()
        run = self.state.runs.get(run_id)
        if run is None:
            raise HttpError(404, {"ok": False, "error": "Run not found"})
        if run.is_finished:
            raise HttpError(
                400, {"ok": False, "error": "Cannot send to input stream on a completed run"}
            )
        raw = await request.body(INPUT_MAX_BYTES)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise HttpError(400, {"ok": False, "error": "Invalid request body"})
        data = body.get("data")
        record_id = "inp_" + uuid.uuid4().hex[:12]
        try:
            run.stream(INPUT_STREAM_PREFIX + stream_id).append_part(js_json(data), record_id)
        except RecordTooLargeError as error:
            raise HttpError(413, {"ok": False, "error": error.message}) from None
        run.inputs.append(InputReceived(stream_id, data, record_id, now_ms()))
        await response.json(200, {"ok": True})

    # -- control API ------------------------------------------------------------------------

    async def _control(
        self, request: Request, token: str | None, response: Response, segments: list[str]
    ) -> None:
        self._secret_only(token)
        method = request.method
        if segments == ["requests"]:
            if method == "GET":
                await response.json(200, [entry.to_json() for entry in self.state.requests])
                return
            if method == "DELETE":
                self.state.clear_requests()
                await response.json(200, {"ok": True})
                return
        if segments == ["faults"] and method == "POST":
            body = await request.json(CONTROL_MAX_BYTES)
            if not isinstance(body, dict):
                raise HttpError(400, {"error": "Expected a JSON object."})
            try:
                run_id = str(body.pop("run_id"))
                key = str(body.pop("key"))
                kind = str(body.pop("kind"))
                self.state.inject_fault(run_id, key, kind, **body)
            except KeyError as error:
                raise HttpError(400, {"error": f"Missing field {error.args[0]!r}."}) from None
            except (TypeError, ValueError) as error:
                raise HttpError(400, {"error": str(error)}) from None
            await response.json(200, {"ok": True})
            return
        if segments[:1] == ["runs"] and len(segments) == 2 and method == "GET":
            await response.json(200, self._run_or_404(segments[1]).to_json())
            return
        if segments[:1] == ["runs"] and segments[2:] == ["update"] and method == "POST":
            run = self._run_or_404(segments[1])
            body = await request.json(CONTROL_MAX_BYTES)
            if not isinstance(body, dict):
                raise HttpError(400, {"error": 'Expected an object like {"status": "…"}.'})
            try:
                self.state.update_run(
                    run.id,
                    status=body.get("status"),
                    metadata=body.get("metadata"),
                    tags=body.get("tags"),
                )
            except (TypeError, ValueError) as error:
                raise HttpError(400, {"error": str(error)}) from None
            await response.json(200, run.to_json())
            return
        if segments[:1] == ["runs"] and segments[2:] == ["fail"] and method == "POST":
            run = self._run_or_404(segments[1])
            body = await request.json(CONTROL_MAX_BYTES)
            failure = body.get("error") if isinstance(body, dict) else None
            self.state.fail_run(run.id, failure if failure is not None else "Failed by the test")
            await response.json(200, run.to_json())
            return
        if segments[:1] == ["runs"] and segments[2:] == ["complete"] and method == "POST":
            run = self._run_or_404(segments[1])
            body = await request.json(CONTROL_MAX_BYTES)
            output = body.get("output") if isinstance(body, dict) else None
            self.state.complete_run(run.id, output)
            await response.json(200, run.to_json())
            return
        raise not_found()


class _Utf8Decoder:
    """Incremental UTF-8 decoding, so a character split across body reads is not mangled."""

    def __init__(self) -> None:
        import codecs

        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def decode(self, data: bytes) -> str:
        return str(self._decoder.decode(data))


async def _wait_disconnect(request: Request) -> object:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return message


def _unauthorized() -> HttpError:
    return HttpError(
        403,
        {
            "error": "Unauthorized",
            "code": "unauthorized",
            "param": "access_token",
            "type": "authorization",
        },
    )


def _token_hash(token: str) -> str:
    import hashlib

    return hashlib.sha256(token.encode()).hexdigest()


def _credential_kind(token: str | None, secret_key: str) -> str:
    if token is None:
        return "none"
    if token == secret_key:
        return "secret"
    if token.startswith("tr_"):
        return "invalid-key"
    return "jwt" if unverified_scopes(token) is not None else "invalid"


def _decode_payload(raw: Any, payload_type: str) -> Any:
    """The payload a simulated task sees (§6): JSON as is; superjson's ``json`` field."""
    if payload_type == "application/json":
        return raw
    if not isinstance(raw, str):
        raise HttpError(
            422, {"error": f"payload must be a string when payloadType is {payload_type}."}
        )
    if payload_type == "application/super+json":
        try:
            decoded = json.loads(raw)
        except ValueError:
            raise HttpError(422, {"error": "payload is not valid superjson."}) from None
        return decoded.get("json") if isinstance(decoded, dict) else decoded
    if payload_type == "application/store" and not raw:
        raise HttpError(422, {"error": "payload must not be empty for application/store."})
    return raw


__all__ = ["EmulatorApp", "InjectedDrop"]
