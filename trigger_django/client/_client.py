"""The async Trigger.dev API client: stream reading with resume, input sends, triggers, tokens.

The stream reader follows the official SDK's ``SSEStreamSubscription`` (``@trigger.dev/core``
4.8.3, ``apiClient/runStream.js``): same request headers, both framings, same retry and resume
rules. See ``docs/client.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import json.scanner
import logging
import random
import re
import time
import uuid
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
)
from types import TracebackType
from typing import Any, Final, Generic, Self, TypeVar
from urllib.parse import quote

import httpx

from ._body import ResponseBody
from ._errors import (
    APIStatusError,
    AuthenticationError,
    NotFoundError,
    RunCompletedError,
    TriggerError,
    UpstreamUnavailableError,
    error_for_status,
)
from ._models import RunHandle, StreamPart
from ._runs import (
    ELECTRIC_VERSION,
    SHAPE_BACKOFF_INITIAL,
    SHAPE_BACKOFF_MAX,
    SHAPE_BACKOFF_MULTIPLIER,
    Run,
    RunEvent,
    RunShapeError,
    RunUpdate,
    StreamChunk,
    StreamEnded,
    decode_row,
    parse_packet,
    run_from_row,
)
from ._sse import ServerSentEvent, SSEDecoder
from ._tokens import Expiration, Scopes, flatten_scopes, sign_public_token

logger = logging.getLogger("trigger_django.client")

DEFAULT_BASE_URL: Final = "https://api.trigger.dev"
#: The SDK version whose wire behaviour this client reproduces (sent as ``trigger-version``).
SDK_VERSION: Final = "4.8.3"
API_VERSION: Final = "2025-07-16"
STREAM_START_HEADER: Final = "X-Trigger-Stream-Start"

#: Statuses that end a stream subscription at once (the SDK's ``nonRetryableStatuses``).
TERMINAL_STREAM_STATUSES: Final = frozenset({400, 404, 409, 410, 422})
#: Size of the FIFO window of v2 record ids used to drop duplicates (the SDK's ``SEEN_IDS_CAP``).
SEEN_IDS_CAP: Final = 5000
RETRY_BASE_DELAY: Final = 0.1
RETRY_MAX_DELAY: Final = 5.0
RETRY_JITTER: Final = 0.5
#: How long a stream request may wait for response headers before it is aborted and retried.
HEADER_TIMEOUT: Final = 30.0
CONNECT_TIMEOUT: Final = 10.0
#: Read timeout of a live run-shape request (the server holds it about 20 s, +-15 %).
SHAPE_HOLD_TIMEOUT: Final = 60.0
#: Read timeout of ordinary (non-stream) calls.
REQUEST_TIMEOUT: Final = 30.0
_ERROR_BODY_LIMIT: Final = 64 * 1024

RefreshToken = Callable[[], Awaitable[str]]
Sleep = Callable[[float], Awaitable[None]]


def _reject_constant(name: str) -> Any:
    # JSON.parse rejects NaN/Infinity, so the SDK hands such data over as the raw string.
    raise ValueError(name)


_json_decoder = json.JSONDecoder(parse_constant=_reject_constant)
_json_decode = _json_decoder.decode
# The C scanner behind JSONDecoder.decode, without its two whitespace regex passes: most bodies
# have no surrounding whitespace, and the rest fall back to decode().
_json_scan = json.scanner.make_scanner(_json_decoder)  # type: ignore[arg-type]


def _safe_parse_json(text: str) -> Any:
    """The SDK's ``safeParseJSON``: the parsed value, or the text itself when it is not JSON."""
    try:
        value, end = _json_scan(text, 0)
        if end == len(text):
            return value
    except StopIteration:
        pass
    except (ValueError, RecursionError):  # RecursionError: nested too deep, as JSON.parse's
        return text
    try:
        return _json_decode(text)
    except (ValueError, RecursionError):
        return text


def _dumps(value: Any) -> bytes:
    # JSON.stringify's compact form.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def retry_delay(attempt: int, random_value: float) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based), as the SDK computes it."""
    base: float = min(RETRY_BASE_DELAY * 2.0 ** (attempt - 1), RETRY_MAX_DELAY)
    return base * (1 - RETRY_JITTER * random_value)


_TIMESTAMP_PREFIX = re.compile(r"\s*([+-]?[0-9]+)")


def _redis_timestamp(stream_id: str | None) -> int:
    # `parseInt(<part before "-">, 10)`, or now when that is NaN (the SDK's
    # parseRedisStreamIdTimestamp): ASCII digits only, as parseInt; over 19 digits (no clock
    # gives that, and Python refuses past 4,300) also means now.
    if stream_id:
        match = _TIMESTAMP_PREFIX.match(stream_id.partition("-")[0])
        if match and len(match.group(1).lstrip("+-")) <= 19:
            return int(match.group(1))
    return int(time.time() * 1000)


_SEQ_PREFIX = re.compile(r"([0-9]+)")


def _is_later(seq: str, cursor: str | None) -> bool:
    """Whether the decimal ``seq`` is after ``cursor`` (as digit strings: no size limit)."""
    if cursor is None or not (cursor.isascii() and cursor.isdigit()):
        return True
    a, b = seq.lstrip("0"), cursor.lstrip("0")
    return (len(a), a) > (len(b), b)


class _Abandoned(Exception):
    """Raised inside httpcore (from its trace hook) to end a request nobody waits for."""


class _SendGuard:
    """The ``trace`` extension of each request: once ``abandoned``, it ends the request at the
    next step that has not touched the server yet (or, for a GET, that only waits for it).

    httpcore awaits the hook inside the ``try`` blocks that close a half-used connection, so an
    exception here is handled like a network error: the connection is closed, never leaked.
    """

    __slots__ = ("abandoned", "idempotent", "inner")

    _BEFORE_SENDING: Final = frozenset(
        {
            "connection.connect_tcp.started",
            "connection.connect_unix_socket.started",
            "connection.start_tls.started",
            "http11.send_request_headers.started",
            "http2.send_request_headers.started",
        }
    )
    _WAITING: Final = frozenset(
        {"http11.receive_response_headers.started", "http2.receive_response_headers.started"}
    )

    def __init__(self, idempotent: bool, inner: Any) -> None:
        self.abandoned = False
        self.idempotent = idempotent
        self.inner = inner

    async def __call__(self, name: str, info: dict[str, Any]) -> None:
        if self.abandoned and (
            name in self._BEFORE_SENDING or (self.idempotent and name in self._WAITING)
        ):
            raise _Abandoned(f"the caller is gone ({name})")
        if self.inner is not None:
            await self.inner(name, info)


class _RetryableFailure(Exception):
    """A stream attempt failed in a way the SDK retries (status, ``event: error``, stall)."""


class _AuthRefreshNeeded(Exception):
    def __init__(self, error: APIStatusError) -> None:
        self.error = error
        super().__init__(str(error))


class _StreamState:
    """What survives reconnects of one subscription."""

    __slots__ = (
        "caught_up",
        "cursor",
        "failures",
        "from_latest",
        "on_caught_up",
        "seen_ids",
        "seen_order",
        "stream_version",
        "token",
    )

    def __init__(self, cursor: str | None, from_latest: bool, token: str | None) -> None:
        self.cursor = cursor
        self.from_latest = from_latest
        self.token = token
        self.failures = 0
        self.stream_version: str | None = None
        # v2: the read reached the end of what the stream held (a ping or a batch with `tail`).
        self.caught_up = False
        self.on_caught_up: Callable[[], object] | None = None
        # Kept for the whole subscription (the SDK keeps it per connection) so that a server
        # replaying records after a reconnect cannot produce duplicates either.
        self.seen_ids: set[Any] = set()
        self.seen_order: deque[Any] = deque()


_T = TypeVar("_T")


class RunSubscription(AsyncIterator[_T], Generic[_T]):
    """The async iterator returned by :meth:`TriggerClient.subscribe_run` (of :class:`Run`) and
    :meth:`TriggerClient.subscribe_run_with_streams` (of :data:`RunEvent`).

    ``async with`` (or ``aclose()``, or cancelling the task that iterates) ends the
    subscription and closes its requests.
    """

    def __init__(self, items: AsyncGenerator[_T, None]) -> None:
        self._items = items

    def __aiter__(self) -> AsyncGenerator[_T, None]:
        # `async for` drives the generator directly: no wrapper call per item.
        return self._items

    async def __anext__(self) -> _T:
        return await self._items.__anext__()

    async def aclose(self) -> None:
        await self._items.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


class StreamSubscription(RunSubscription[StreamPart]):
    """The async iterator returned by :meth:`TriggerClient.read_stream`.

    Iterate it for :class:`StreamPart` objects. ``aclose()`` (or leaving ``async with``, or
    cancelling the task that iterates) closes the HTTP response at once. ``last_event_id`` is the
    resume cursor: pass it as ``last_event_id=`` to a later ``read_stream`` to continue.
    """

    def __init__(self, parts: AsyncGenerator[StreamPart, None], state: _StreamState) -> None:
        super().__init__(parts)
        self._state = state

    @property
    def last_event_id(self) -> str | None:
        return self._state.cursor

    @property
    def stream_version(self) -> str | None:
        """``"v1"`` or ``"v2"`` once a response arrived (from ``X-Stream-Version``)."""
        return self._state.stream_version

    @property
    def caught_up(self) -> bool:
        """``True`` once a v2 read has reached the end of what the stream held: S2 sends a
        ``ping`` (or a live ``batch``) with a ``tail`` then. Always ``False`` on v1 streams,
        which say nothing of it."""
        return self._state.caught_up

    @property
    def on_caught_up(self) -> Callable[[], object] | None:
        """Called once, when the read first catches up, see :attr:`caught_up`."""
        return self._state.on_caught_up

    @on_caught_up.setter
    def on_caught_up(self, callback: Callable[[], object] | None) -> None:
        self._state.on_caught_up = callback


class _ShapeState:
    """One Electric ShapeStream (``@electric-sql/client`` 1.0.14) folded into rows as the SDK's
    ``ReadableShapeStream`` does: inserts set a row, updates merge into it, ``must-refetch``
    clears them; rows are emitted once a batch says ``up-to-date``, one per changed key."""

    __slots__ = (
        "cursor",
        "expired_handle",
        "handle",
        "offset",
        "rows",
        "schema",
        "up_to_date",
        "updated",
    )

    def __init__(self) -> None:
        self.offset = "-1"
        self.handle: str | None = None
        self.cursor = ""
        self.expired_handle: str | None = None
        self.schema: dict[str, Any] | None = None
        self.up_to_date = False
        self.rows: dict[str, dict[str, Any]] = {}
        self.updated: dict[str, None] = {}  # an ordered set of keys

    def receive(self, response: httpx.Response, *, live: str | None) -> list[dict[str, Any]]:
        headers = response.headers
        required = ["electric-offset", "electric-handle"]
        required.append("electric-cursor" if live == "true" else "electric-schema")
        missing = [name for name in required if name not in headers]
        if missing:
            raise RunShapeError(
                f"The run shape response lacks the header(s) {', '.join(missing)} (a proxy "
                "that drops or does not expose them?)"
            )
        self.handle = headers.get("electric-handle") or self.handle
        self.offset = headers.get("electric-offset") or self.offset
        self.cursor = headers.get("electric-cursor") or self.cursor
        if self.schema is None:
            schema = _safe_parse_json(headers.get("electric-schema", "{}"))
            if not isinstance(schema, dict):
                raise RunShapeError("The electric-schema header is not a JSON object")
            self.schema = schema
        messages = self._messages(response.text or "[]")
        if messages and _control(messages[-1]) == "up-to-date":
            self.up_to_date = True
        return self._apply(messages)

    def must_refetch(self, response: httpx.Response) -> None:
        if self.handle:
            self.expired_handle = self.handle
        self.handle = response.headers.get("electric-handle") or f"{self.handle}-next"
        self.offset = "-1"
        self.cursor = ""
        self.up_to_date = False
        self.schema = None
        body = _safe_parse_json(response.text) if response.text else []
        self._apply(body if isinstance(body, list) else [])

    def _messages(self, text: str) -> list[Any]:
        body = _safe_parse_json(text)
        if not isinstance(body, list):
            raise RunShapeError(f"The run shape body is not a JSON array: {text[:200]!r}")
        return body

    def _apply(self, messages: list[Any]) -> list[dict[str, Any]]:
        up_to_date = False
        for message in messages:
            if not isinstance(message, dict):
                logger.warning("Skipped a run shape message that is not an object")
                continue
            if "key" in message:
                operation = _operation(message)
                value = message.get("value")
                if operation not in ("insert", "update") or not isinstance(value, dict):
                    continue  # deletes are ignored, as in the SDK
                key = str(message["key"])
                row = decode_row(value, self.schema or {})
                if operation == "update" and key in self.rows:
                    row = {**self.rows[key], **row}
                self.rows[key] = row
                self.updated[key] = None
            else:
                control = _control(message)
                if control == "must-refetch":
                    self.rows.clear()
                elif control == "up-to-date":
                    up_to_date = True
        if not up_to_date:
            return []
        emitted = [self.rows[key] for key in self.updated if key in self.rows]
        self.updated.clear()
        return emitted


def _control(message: Any) -> Any:
    headers = message.get("headers") if isinstance(message, dict) else None
    return headers.get("control") if isinstance(headers, dict) else None


def _operation(message: dict[str, Any]) -> Any:
    headers = message.get("headers")
    return headers.get("operation") if isinstance(headers, dict) else None


def _skip_columns(columns: Iterable[str]) -> str | None:
    if isinstance(columns, str):
        raise ValueError("skip_columns must be a list of column names, not one string")
    names = list(columns)
    for name in names:
        if not isinstance(name, str) or not name or "," in name:
            raise ValueError(f"skip_columns holds an invalid column name: {name!r}")
    return ",".join(names) or None


class TriggerClient:
    """An async client for the parts of the Trigger.dev API that ``trigger_django`` needs.

    ``secret_key`` (``tr_dev_…``/``tr_prod_…``) authenticates and lets the client sign public
    tokens locally; ``access_token`` (a public JWT or run token) authenticates only, and is
    preferred for requests when both are given. Pass ``http_client`` to share an
    ``httpx.AsyncClient`` (it is then never closed here), or ``transport`` to build one on it. The
    client owns one connection pool; every open stream holds one connection for its whole life,
    so size ``max_connections`` for the number of concurrent streams.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        secret_key: str | None = None,
        access_token: str | None = None,
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 1000,
        max_keepalive_connections: int = 100,
        preview_branch: str | None = None,
        header_timeout: float = HEADER_TIMEOUT,
        max_request_attempts: int = 3,
        retry_sleep: Sleep = asyncio.sleep,
        retry_random: Callable[[], float] = random.random,
    ) -> None:
        if not base_url:
            raise ValueError(
                "base_url must be the Trigger.dev API URL, e.g. https://api.trigger.dev"
            )
        if http_client is not None and transport is not None:
            raise ValueError("Pass either http_client or transport, not both")
        if max_request_attempts < 1:
            raise ValueError("max_request_attempts must be at least 1")
        self.base_url = base_url.rstrip("/")
        self._secret_key = secret_key
        self._token = access_token or secret_key
        self._preview_branch = preview_branch
        self._header_timeout = header_timeout
        self._max_request_attempts = max_request_attempts
        self._sleep = retry_sleep
        self._random = retry_random
        self._owns_client = http_client is None
        if http_client is None:
            http_client = httpx.AsyncClient(
                transport=transport,
                limits=httpx.Limits(
                    max_connections=max_connections,
                    max_keepalive_connections=max_keepalive_connections,
                ),
                timeout=httpx.Timeout(REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT),
                follow_redirects=True,
            )
        self.http_client = http_client
        # The wait for a pooled connection and for the response headers are bounded by httpcore
        # itself (pool and read timeouts: exceptions inside its own clean-up paths, never a
        # cancellation); once the headers are in, the body read gets no timeout (the server
        # pings or ends the stream), see _send.
        self._stream_timeout = httpx.Timeout(
            connect=CONNECT_TIMEOUT,
            read=header_timeout,
            write=REQUEST_TIMEOUT,
            pool=header_timeout,
        )
        # Live shape requests are held by the server (about 20 s) before it answers.
        self._shape_timeout = httpx.Timeout(
            connect=CONNECT_TIMEOUT,
            read=max(header_timeout, SHAPE_HOLD_TIMEOUT),
            write=REQUEST_TIMEOUT,
            pool=header_timeout,
        )
        # Sends abandoned by a cancelled caller, finishing on their own (see _send).
        self._abandoned: set[asyncio.Future[None]] = set()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool, if this client created it.

        Requests abandoned by cancelled callers are given a moment to return their connections
        first (see :meth:`_send`).
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await self.wait_abandoned()
        if self._owns_client:
            await self.http_client.aclose()

    async def wait_abandoned(self) -> None:
        """Wait until every request abandoned by a cancelled caller has returned its connection
        (each is bounded by the client's timeouts)."""
        while self._abandoned:
            await asyncio.wait(set(self._abandoned))

    # -- sending ---------------------------------------------------------------------------------

    async def _send(
        self, request: httpx.Request, *, stream: bool, limit: float | None = None
    ) -> httpx.Response:
        """``http_client.send``, safe against the caller being cancelled at any point.

        httpcore (1.0.x) is not safe against an asyncio cancellation delivered inside
        ``handle_async_request``: cancelled between opening a connection and starting the
        request on it (a lock acquisition in ``AsyncHTTP11Connection`` is the window), or while
        waiting for a pooled connection that was just assigned, it leaves a connection in the
        pool that no request owns and that is never idle, closed or expired, so it is never
        reused nor reaped (encode/httpcore#1093). Enough of them fill the pool for good.

        So the send runs in a task of its own that is never cancelled: its waits are bounded by
        httpcore's own timeouts (pool, connect, write, and read up to the response headers),
        which end it through httpcore's clean-up paths. If the caller is cancelled meanwhile,
        the cancellation takes effect at once for the caller, and the abandoned send finishes
        on its own; its response is then closed, which returns the connection to the pool (or
        closes it when the body was not read to the end). An abandoned request that has not
        been written yet is never written: httpcore's trace hook raises at the next step
        (opening a connection, writing the request; for a GET also waiting for the response),
        inside httpcore's own clean-up paths, so it ends at once without a cancellation. Once
        the headers of a stream are in, its read timeout is lifted (the server pings or ends
        the stream). ``limit`` bounds the caller's wait too, for transports that do not apply
        httpx's timeouts.
        """
        guard = _SendGuard(request.method in ("GET", "HEAD"), request.extensions.get("trace"))
        request.extensions["trace"] = guard
        task = asyncio.create_task(
            self.http_client.send(request, stream=stream, follow_redirects=True)
        )
        try:
            # wait() neither cancels the task on a timeout nor when this caller is cancelled.
            done, _ = await asyncio.wait((task,), timeout=limit)
        except BaseException:
            guard.abandoned = True
            self._abandon(task)
            raise
        if not done:
            # httpcore's timeouts have not ended it (a transport that does not apply them).
            guard.abandoned = True
            self._abandon(task)
            raise _RetryableFailure(
                f"no response headers within {self._header_timeout:g} s (a slow server, or "
                "every pooled connection busy: see max_connections)"
            )
        try:
            response = task.result()
        except httpx.PoolTimeout:
            raise _RetryableFailure(
                f"no pooled connection free within {self._header_timeout:g} s (every "
                "connection busy: see max_connections)"
            ) from None
        except httpx.ReadTimeout:
            if not stream:
                raise
            raise _RetryableFailure(
                f"no response headers within {self._header_timeout:g} s"
            ) from None
        if stream:
            timeouts = response.request.extensions.get("timeout")
            if isinstance(timeouts, dict):
                timeouts["read"] = None  # read by httpcore at every body read
        return response

    def _abandon(self, task: asyncio.Task[httpx.Response]) -> None:
        self._track(asyncio.ensure_future(self._finish_abandoned(task)))

    async def _finish_abandoned(self, task: asyncio.Task[httpx.Response]) -> None:
        # Bounded by httpcore's timeouts; the limit here only catches a transport without them.
        limit = self._header_timeout + CONNECT_TIMEOUT + REQUEST_TIMEOUT
        done, _ = await asyncio.wait((task,), timeout=limit)
        if not done:
            task.cancel()
            await asyncio.wait((task,))
        if task.cancelled():
            return
        if task.exception() is not None:
            return  # already handled by httpcore: the connection is closed or back in the pool
        try:
            await task.result().aclose()
        except Exception as exc:  # nobody is waiting for this response
            logger.debug("Closing an abandoned response failed: %r", exc)

    async def _close_body(self, body: ResponseBody) -> None:
        """``body.aclose()``, carried to its end even if the caller is cancelled again."""
        await asyncio.shield(self._track(asyncio.ensure_future(body.aclose())))

    def _track(self, future: asyncio.Future[None]) -> asyncio.Future[None]:
        self._abandoned.add(future)
        future.add_done_callback(self._abandoned.discard)
        return future

    # -- headers -------------------------------------------------------------------------------

    def _headers(self, token: str | None) -> dict[str, str]:
        """The SDK's ``#getHeaders`` set (outside a task, not in a browser)."""
        if not token:
            raise AuthenticationError(
                401, "No API credential: pass secret_key or access_token to TriggerClient"
            )
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token}",
            "trigger-version": SDK_VERSION,
            "x-trigger-source": "sdk",
            "x-trigger-api-version": API_VERSION,
            "x-trigger-realtime-streams-version": "v2",
        }
        if self._preview_branch:
            headers["x-trigger-branch"] = self._preview_branch
        return headers

    # -- output streams ------------------------------------------------------------------------

    def read_stream(
        self,
        run_id: str,
        key: str = "default",
        *,
        last_event_id: str | None = None,
        start_index: int | None = None,
        from_latest: bool = False,
        timeout_seconds: float | None = None,
        stall_timeout: float | None = None,
        refresh_token: RefreshToken | None = None,
    ) -> StreamSubscription:
        """Read a run's output stream, resuming after drops, as the SDK's ``fetchStream`` does.

        ``last_event_id`` resumes after that cursor; otherwise ``start_index=N`` skips the first
        N records (sent as ``Last-Event-ID: N-1``), and ``from_latest`` asks for only new
        records. ``timeout_seconds`` is the server's idle timeout (``Timeout-Seconds``).
        ``stall_timeout`` reconnects when nothing (not even a ping) arrives for that many
        seconds. ``refresh_token`` is awaited once for a new token when the server answers 401
        or 403; without it those are terminal.

        The iterator ends when the server ends the response cleanly (the stream went idle); it
        raises an :class:`APIStatusError` subclass for 400/401/403/404/409/410/422 and retries
        everything else forever.
        """
        run_segment = path_segment(run_id, "run_id")
        key_segment = path_segment(key, "stream key")
        if start_index is not None and start_index < 0:
            raise ValueError(f"start_index must be 0 or more, not {start_index}")
        if stall_timeout is not None and stall_timeout <= 0:
            raise ValueError(
                f"stall_timeout must be a positive number of seconds, not {stall_timeout}"
            )
        cursor = last_event_id or (str(start_index - 1) if start_index else None)
        state = _StreamState(cursor, from_latest, self._token)
        url = f"{self.base_url}/realtime/v1/streams/{run_segment}/{key_segment}"
        parts = self._stream_parts(
            url,
            f"{run_id}/{key}",
            state,
            timeout_seconds=timeout_seconds,
            stall_timeout=stall_timeout,
            refresh_token=refresh_token,
        )
        return StreamSubscription(parts, state)

    def _stream_request(
        self, url: str, state: _StreamState, timeout_seconds: float | None
    ) -> httpx.Request:
        headers = self._headers(state.token)
        headers["Accept"] = "text/event-stream"
        headers["Cache-Control"] = "no-store"
        if state.cursor:
            headers["Last-Event-ID"] = state.cursor
        elif state.from_latest:
            headers[STREAM_START_HEADER] = "latest"
        if timeout_seconds:
            seconds = timeout_seconds
            if isinstance(seconds, float) and seconds.is_integer():
                seconds = int(seconds)
            headers["Timeout-Seconds"] = str(seconds)
        return self.http_client.build_request(
            "GET", url, headers=headers, timeout=self._stream_timeout
        )

    async def _stream_parts(
        self,
        url: str,
        name: str,
        state: _StreamState,
        *,
        timeout_seconds: float | None,
        stall_timeout: float | None,
        refresh_token: RefreshToken | None,
    ) -> AsyncGenerator[StreamPart, None]:
        auth_refreshed = False
        context = f"Could not subscribe to stream {name}"
        cause: str
        while True:
            request = self._stream_request(url, state, timeout_seconds)
            try:
                response = await self._send(request, stream=True, limit=self._header_timeout)
                body = ResponseBody(response)
                try:
                    if not response.is_success:
                        await self._raise_stream_status(
                            body, context, refresh_token, auth_refreshed
                        )
                    state.stream_version = response.headers.get("x-stream-version", "v1")
                    v2 = state.stream_version != "v1"
                    decoder = SSEDecoder()
                    while (chunk := await _next_chunk(body, stall_timeout)) is not None:
                        for event in decoder.feed(chunk):
                            if v2:
                                for part in _v2_parts(event, state):
                                    state.failures = 0
                                    auth_refreshed = False
                                    yield part
                            else:
                                state.failures = 0
                                auth_refreshed = False
                                yield _v1_part(event, state)
                    logger.debug("Stream %s ended (the server closed it cleanly)", name)
                    return
                finally:
                    await self._close_body(body)
            except _AuthRefreshNeeded as refresh:
                auth_refreshed = True
                assert refresh_token is not None
                logger.info("Stream %s: %s; refreshing the access token", name, refresh.error)
                try:
                    state.token = await refresh_token()
                except Exception as exc:
                    logger.warning("Stream %s: access token refresh failed: %r", name, exc)
                    raise refresh.error from exc
                cause = f"{refresh.error.status} (token refreshed)"
            except _RetryableFailure as exc:
                cause = str(exc)
            except httpx.RequestError as exc:  # network errors, abrupt ends, broken encodings
                cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            state.failures += 1
            delay = retry_delay(state.failures, self._random())
            logger.info(
                "Stream %s: %s; reconnecting in %.3f s (attempt %d, Last-Event-ID %s)",
                name,
                cause,
                delay,
                state.failures,
                state.cursor,
            )
            await self._sleep(delay)

    async def _raise_stream_status(
        self,
        body: ResponseBody,
        context: str,
        refresh_token: RefreshToken | None,
        auth_refreshed: bool,
    ) -> None:
        status = body.response.status_code
        message = await _error_message(body)
        if status in TERMINAL_STREAM_STATUSES:
            error = error_for_status(status, message, context=context)
            logger.warning("%s", error)
            raise error
        if status in (401, 403):
            error = error_for_status(status, message, context=context)
            if refresh_token is not None and not auth_refreshed:
                raise _AuthRefreshNeeded(error)
            logger.warning("%s", error)
            raise error
        raise _RetryableFailure(f"status {status}" + (f" ({message})" if message else ""))

    # -- run subscriptions ---------------------------------------------------------------------

    def subscribe_run(
        self,
        run_id: str,
        *,
        skip_columns: Iterable[str] = ("payload",),
        stop_on_completion: bool = True,
    ) -> RunSubscription[Run]:
        """Follow a run's state as the SDK's ``runs.subscribeToRun`` does (Electric shape).

        Yields a :class:`Run` for the snapshot and for every change after it, and ends after
        the first state with ``finished_at`` set when ``stop_on_completion``. Use as
        ``async with client.subscribe_run(run_id) as runs: async for run in runs: ...``.
        Network errors, 5xx and 429 are retried with Electric's backoff (100 ms, x1.3, at most
        10 s); other 4xx raise the :class:`APIStatusError` subclass; a shape the SDK could not
        read raises :class:`RunShapeError`.
        """
        url = f"{self.base_url}/realtime/v1/runs/{path_segment(run_id, 'run_id')}"
        columns = _skip_columns(skip_columns)
        return RunSubscription(self._run_states(run_id, url, columns, stop_on_completion))

    def subscribe_run_with_streams(
        self,
        run_id: str,
        *,
        skip_columns: Iterable[str] = ("payload",),
        stop_on_completion: bool = True,
        drain_timeout: float = 30.0,
        max_buffered: int = 256,
    ) -> RunSubscription[RunEvent]:
        """A run's states and the parts of every stream it names, as ``withStreams()`` gives them.

        Yields :class:`RunUpdate` for each run state, :class:`StreamChunk` for each part of a
        stream named in ``realtime_streams`` (each stream is read from its start as soon as a
        run state names it), and :class:`StreamEnded` when one stream's read ends. After the
        run has finished (with ``stop_on_completion``), the streams still open are read for up
        to ``drain_timeout`` seconds (the SDK keeps them 30 s), then the iterator ends.
        ``max_buffered`` events wait for a slow consumer before the readers pause.
        """
        if drain_timeout < 0:
            raise ValueError(f"drain_timeout must be 0 or more seconds, not {drain_timeout}")
        if max_buffered < 1:
            raise ValueError(f"max_buffered must be at least 1, not {max_buffered}")
        runs = self.subscribe_run(
            run_id, skip_columns=skip_columns, stop_on_completion=stop_on_completion
        )
        return RunSubscription(self._run_events(runs, drain_timeout, max_buffered))

    def _shape_request(
        self, url: str, shape: _ShapeState, skip_columns: str | None
    ) -> httpx.Request:
        token = self._token
        if not token:
            raise AuthenticationError(
                401, "No API credential: pass secret_key or access_token to TriggerClient"
            )
        # The SDK's realtime header set plus what zodShapeStream adds.
        headers = {
            "Authorization": f"Bearer {token}",
            "trigger-version": SDK_VERSION,
            "x-trigger-electric-version": ELECTRIC_VERSION,
            "x-trigger-api-version": API_VERSION,
        }
        if self._preview_branch:
            headers["x-trigger-branch"] = self._preview_branch
        params: dict[str, str] = {"log": "full", "offset": shape.offset}
        if skip_columns:
            params["skipColumns"] = skip_columns
        if shape.up_to_date:
            params["live"] = "true"
            params["cursor"] = shape.cursor
        if shape.handle:
            params["handle"] = shape.handle
        if shape.expired_handle:
            params["expired_handle"] = shape.expired_handle
        return self.http_client.build_request(
            "GET", url, params=sorted(params.items()), headers=headers, timeout=self._shape_timeout
        )

    async def _run_states(
        self, run_id: str, url: str, skip_columns: str | None, stop_on_completion: bool
    ) -> AsyncGenerator[Run, None]:
        context = f"Could not subscribe to run {run_id}"
        shape = _ShapeState()
        packets: dict[str, tuple[str | None, str | None, Any]] = {}
        delay = SHAPE_BACKOFF_INITIAL
        while True:
            request = self._shape_request(url, shape, skip_columns)
            try:
                response = await self._send(request, stream=False)
            except _RetryableFailure as exc:
                failure = str(exc)
            except httpx.RequestError as exc:
                failure = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                status = response.status_code
                if response.is_success:
                    delay = SHAPE_BACKOFF_INITIAL
                    for row in shape.receive(response, live=request.url.params.get("live")):
                        run = await self._run_from_row(row, packets)
                        yield run
                        if stop_on_completion and run.finished_at is not None:
                            logger.debug("Run %s finished: subscription ends", run_id)
                            return
                    continue
                if status == 409:
                    logger.info("Run %s: 409 must-refetch; resubscribing from a snapshot", run_id)
                    shape.must_refetch(response)
                    continue
                message = _message_from_body(response.content, response.headers)
                if 400 <= status < 500 and status != 429:
                    raise self._status_error(status, message, context)
                failure = f"status {status}" + (f" ({message})" if message else "")
            logger.info("%s: %s; retrying in %.3f s", context, failure, delay)
            await self._sleep(delay)
            delay = min(delay * SHAPE_BACKOFF_MULTIPLIER, SHAPE_BACKOFF_MAX)

    async def _run_from_row(
        self, row: dict[str, Any], packets: dict[str, tuple[str | None, str | None, Any]]
    ) -> Run:
        values: list[Any] = []
        for field_name in ("payload", "output"):
            data_type = row.get(f"{field_name}Type")
            if not data_type:
                values.append(None)
                continue
            data = row.get(field_name)
            if data is not None and not isinstance(data, str):
                raise RunShapeError(
                    f"Unable to parse shape: column {field_name!r} should be a string"
                )
            cached = packets.get(field_name)
            if cached is not None and cached[0] == data and cached[1] == data_type:
                values.append(cached[2])
                continue
            if data_type == "application/store" and data:
                data, data_type = await self._import_packet(row, field_name, data)
            value = parse_packet(data, data_type)
            packets[field_name] = (row.get(field_name), row.get(f"{field_name}Type"), value)
            values.append(value)
        return run_from_row(row, values[0], values[1])

    async def _import_packet(
        self, row: dict[str, Any], field_name: str, path: str
    ) -> tuple[str, str]:
        """An offloaded (``application/store``) packet, downloaded as the SDK's importPacket."""
        run_id = str(row.get("friendlyId"))
        context = f"Could not download the {field_name} of run {run_id}"
        try:
            answer = await self._request(
                "GET",
                f"/api/v1/runs/{path_segment(run_id, 'run_id')}/packets/{field_name}",
                None,
                context=context,
            )
        except NotFoundError:
            answer = await self._request(
                "GET", f"/api/v1/packets/{quote(path, safe='/')}", None, context=context
            )
        presigned = _json_or_none(answer)
        url = presigned.get("presignedUrl") if isinstance(presigned, dict) else None
        if not isinstance(url, str):
            raise TriggerError(f"{context}: the server sent no presignedUrl")
        try:
            response = await self._send(self.http_client.build_request("GET", url), stream=False)
        except httpx.RequestError as exc:
            raise UpstreamUnavailableError(f"{context}: {exc!r}") from exc
        if not response.is_success:
            raise UpstreamUnavailableError(
                f"{context}: status {response.status_code}", status=response.status_code
            )
        return response.text, response.headers.get("content-type", "application/json")

    async def _run_events(
        self, runs: RunSubscription[Run], drain_timeout: float, max_buffered: int
    ) -> AsyncGenerator[RunEvent, None]:
        queue: asyncio.Queue[RunEvent | BaseException | None] = asyncio.Queue(max_buffered)
        readers: dict[str, asyncio.Task[None]] = {}

        async def read(key: str, run: Run) -> None:
            error: TriggerError | None = None
            try:
                async with self.read_stream(run.id, key) as parts:
                    async for part in parts:
                        await queue.put(StreamChunk(key, part, run))
            except TriggerError as exc:
                error = exc
            await queue.put(StreamEnded(key, error))

        async def follow() -> None:
            try:
                async with runs:
                    async for run in runs:
                        await queue.put(RunUpdate(run))
                        for key in run.stream_keys():
                            if key not in readers:
                                readers[key] = asyncio.create_task(read(key, run))
            except Exception as exc:
                await queue.put(exc)
            await queue.put(None)  # the run subscription is over

        follower = asyncio.create_task(follow())
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        try:
            while True:
                if (
                    deadline is not None
                    and queue.empty()
                    and all(task.done() for task in readers.values())
                ):
                    return
                try:
                    async with asyncio.timeout_at(deadline):
                        item = await queue.get()
                except TimeoutError:
                    logger.debug("Run streams still open after the drain time: closing them")
                    return
                if item is None:
                    deadline = loop.time() + drain_timeout
                    continue
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            tasks = [follower, *readers.values()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- input streams -------------------------------------------------------------------------

    async def send_input(self, run_id: str, stream_id: str, data: Any) -> Any:
        """Send ``data`` to a run's input stream (``streams.input(...).send`` / the hook's send).

        Returns the server's JSON answer (``{"ok": true}``). Raises :class:`NotFoundError` for an
        unknown run, :class:`RunCompletedError` when the run has finished,
        :class:`BadRequestError`, :class:`PayloadTooLargeError`,
        :class:`UnprocessableEntityError`, :class:`AuthenticationError` or
        :class:`PermissionDeniedError`.
        """
        path = (
            f"/realtime/v1/streams/{path_segment(run_id, 'run_id')}"
            f"/input/{path_segment(stream_id, 'input stream id')}"
        )
        try:
            body = _dumps({"data": data})
        except (TypeError, ValueError) as exc:
            raise TypeError(f"Input stream data must be JSON-serialisable: {exc}") from exc
        response = await self._request(
            "POST",
            path,
            body,
            context=f"Could not send to input stream {run_id}/{stream_id}",
        )
        return _json_or_none(response)

    # -- triggering ----------------------------------------------------------------------------

    async def trigger(
        self,
        task_id: str,
        payload: Any = None,
        *,
        idempotency_key: str | None = None,
        tags: str | list[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        delay: str | None = None,
        ttl: str | int | None = None,
        stream_version: str = "v2",
        **options: Any,
    ) -> RunHandle:
        """Trigger ``task_id`` with a JSON ``payload`` and return the run and its read token.

        Further trigger options may be passed as keyword arguments, in snake_case or camelCase
        (``max_attempts=3``, ``queue={"name": "q"}``, ``concurrency_key="k"``).
        """
        task_segment = path_segment(task_id, "task_id")
        trigger_options: dict[str, Any] = {"payloadType": "application/json"}
        for name, value in {
            "idempotencyKey": idempotency_key,
            "tags": tags,
            "metadata": metadata,
            "delay": delay,
            "ttl": ttl,
            **{_camel(name): value for name, value in options.items()},
        }.items():
            if value is not None:
                trigger_options[name] = value
        try:
            body = _dumps({"payload": payload, "options": trigger_options})
        except (TypeError, ValueError) as exc:
            raise TypeError(f"Task payload and options must be JSON-serialisable: {exc}") from exc
        response = await self._request(
            "POST",
            f"/api/v1/tasks/{task_segment}/trigger",
            body,
            context=f"Could not trigger task {task_id}",
            extra_headers={"x-trigger-realtime-streams-version": stream_version},
        )
        result = _json_or_none(response)
        if not isinstance(result, dict) or not isinstance(result.get("id"), str):
            raise TriggerError(
                f"Unexpected trigger response for task {task_id}: {response.text[:200]!r}"
            )
        run_id: str = result["id"]
        token = response.headers.get("x-trigger-jwt")
        if token is None:
            token = self._self_signed_run_token(
                run_id, response.headers.get("x-trigger-jwt-claims")
            )
        return RunHandle(run_id, token, bool(result.get("isCached", False)))

    def _self_signed_run_token(self, run_id: str, claims_header: str | None) -> str:
        # What the SDK does when the server sends no x-trigger-jwt: sign the claims it sent.
        if not self._secret_key:
            raise TriggerError(
                "The trigger response carried no x-trigger-jwt token, and without a secret_key "
                "the client cannot sign one"
            )
        try:
            claims = json.loads(claims_header) if claims_header else {}
        except ValueError:
            claims = None
        if not isinstance(claims, dict):
            raise TriggerError("x-trigger-jwt-claims is not a JSON object")
        sub = claims.pop("sub", None)
        claims.pop("pub", None)
        claims.pop("scopes", None)
        return sign_public_token(
            self._secret_key,
            sub=str(sub) if sub is not None else "",
            scopes=[f"read:runs:{run_id}"],
            expiration="1h",
            extra_claims=claims,
        )

    # -- tokens --------------------------------------------------------------------------------

    async def jwt_claims(self) -> dict[str, Any]:
        """The environment's token claims, ``{"sub": <environment id>, "pub": true}``, as the
        SDK's ``generateJWTClaims`` fetches them (``POST /api/v1/auth/jwt/claims``)."""
        response = await self._request(
            "POST", "/api/v1/auth/jwt/claims", None, context="Could not fetch the token claims"
        )
        claims = _json_or_none(response)
        if not isinstance(claims, dict) or not isinstance(claims.get("sub"), str):
            raise TriggerError("Unexpected answer from /api/v1/auth/jwt/claims (no 'sub')")
        return claims

    async def create_public_token(
        self,
        scopes: Scopes,
        expiration: Expiration = "15m",
        *,
        realtime: Mapping[str, Any] | None = None,
    ) -> str:
        """Mint a public access token as ``auth.createPublicToken`` does with a secret key.

        Fetches the environment claims (``POST /api/v1/auth/jwt/claims``), then signs locally.
        ``scopes`` is the SDK's nested form or a list of scope strings.
        """
        flat = flatten_scopes(scopes)  # validate before any request
        if not self._secret_key:
            raise TriggerError("create_public_token needs the secret_key to sign the token")
        claims = await self.jwt_claims()
        sub = claims.pop("sub")
        claims.pop("pub", None)
        return sign_public_token(
            self._secret_key,
            sub=sub,
            scopes=flat,
            expiration=expiration,
            realtime=realtime,
            extra_claims=claims,
        )

    # -- plumbing ------------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        body: bytes | None,
        *,
        context: str,
        extra_headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """A JSON call with the SDK's retry rules (``x-should-retry``; 408/429/5xx; network)."""
        headers = self._headers(self._token)
        if extra_headers:
            headers.update(extra_headers)
        # Lets the server drop a retried request it already handled, as the SDK's zodfetch does.
        headers["x-trigger-request-idempotency-key"] = str(uuid.uuid4())
        url = f"{self.base_url}{path}"
        last_failure = ""
        last_status: int | None = None
        for attempt in range(1, self._max_request_attempts + 1):
            try:
                response = await self._send(
                    self.http_client.build_request(method, url, content=body, headers=headers),
                    stream=False,
                )
            except _RetryableFailure as exc:
                last_failure = str(exc)
                last_status = None
            except httpx.RequestError as exc:
                last_failure = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                last_status = None
            else:
                if response.is_success:
                    return response
                status = response.status_code
                message = _message_from_body(response.content, response.headers)
                if not _should_retry(response):
                    raise self._status_error(status, message, context)
                last_failure = f"status {status}" + (f" ({message})" if message else "")
                last_status = status
            if attempt < self._max_request_attempts:
                delay = min(1.0 * 1.6 ** (attempt - 1), 30.0) * (1 - RETRY_JITTER * self._random())
                if last_status == 429:
                    delay = _rate_limit_delay(response.headers, default=delay)
                logger.info(
                    "%s: %s; retrying in %.3f s (attempt %d of %d)",
                    context,
                    last_failure,
                    delay,
                    attempt,
                    self._max_request_attempts,
                )
                await self._sleep(delay)
        logger.warning("%s: giving up after %d attempts: %s", context, attempt, last_failure)
        raise UpstreamUnavailableError(
            f"{context}: Trigger.dev API unavailable after {attempt} attempts ({last_failure})",
            status=last_status,
        )

    @staticmethod
    def _status_error(status: int, message: str, context: str) -> APIStatusError:
        error: APIStatusError
        if status == 400 and "completed run" in message.lower():
            error = RunCompletedError(status, message, context=context)
        else:
            error = error_for_status(status, message, context=context)
        logger.warning("%s", error)
        return error


# RFC 3986 path-segment characters kept as they are (pchar: sub-delims, ":" and "@"; ";" is
# left out, as some servers cut path parameters at it); everything else is percent-encoded,
# "%" and "/" included, so an id can neither add a path segment nor smuggle an escape.
_PATH_SAFE: Final = "!$&'()*+,=:@"
_CONTROL_CHARACTER: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def path_segment(value: object, name: str) -> str:
    """``value`` percent-encoded as one URL path segment, or a ``ValueError`` saying why not.

    The client puts run ids, stream keys, input stream ids and task ids into URL paths itself,
    so it checks them itself: not empty, no control characters (a trailing newline included),
    valid Unicode, not ``.`` or ``..`` (which URL normalisation would drop or climb out of).
    """
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    bad = _CONTROL_CHARACTER.search(value)
    if bad:
        raise ValueError(
            f"{name} {value!r} contains a control character ({bad.group()!r} at position "
            f"{bad.start()})"
        )
    if value in (".", ".."):
        raise ValueError(f"{name} {value!r} is not usable in a URL path (a dot segment)")
    try:
        return quote(value, safe=_PATH_SAFE)
    except UnicodeEncodeError:
        raise ValueError(f"{name} {value!r} is not valid Unicode text") from None


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def _rate_limit_delay(headers: httpx.Headers, *, default: float) -> float:
    # The SDK waits until `x-ratelimit-reset` (epoch ms) on a 429; capped like its backoff.
    reset = headers.get("x-ratelimit-reset", "")
    if reset.isdigit():
        return min(max(int(reset) / 1000 - time.time(), 0.0), 30.0)
    return default


def _should_retry(response: httpx.Response) -> bool:
    header = response.headers.get("x-should-retry")
    if header == "true":
        return True
    if header == "false":
        return False
    status = response.status_code
    return status in (408, 429) or status >= 500


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, RecursionError):
        return None


def _record_headers(headers: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(headers, list):
        return ()
    return tuple(
        (str(pair[0]), str(pair[1]))
        for pair in headers
        if isinstance(pair, list | tuple) and len(pair) == 2
    )


def _v1_part(event: ServerSentEvent, state: _StreamState) -> StreamPart:
    # v1 ignores the event name: every event with data is a part (the SDK's v1 branch).
    event_id = event.id
    if event_id:
        state.cursor = event_id
    return StreamPart(
        "unknown" if event_id is None else event_id,
        _safe_parse_json(event.data),
        _redis_timestamp(event_id),
    )


def _v2_parts(event: ServerSentEvent, state: _StreamState) -> Iterator[StreamPart]:
    """The parts of one v2 event, moving the cursor record by record as they are taken."""
    if event.event != "batch":
        if event.event == "error":
            raise _RetryableFailure(f"Stream read failed: {event.data}")
        if event.event == "ping" and '"tail"' in event.data:
            ping = _safe_parse_json(event.data)
            if type(ping) is dict and type(ping.get("tail")) is dict:
                _caught_up(state)
        return  # ping, [DONE]
    batch = _safe_parse_json(event.data)
    records = batch.get("records") if type(batch) is dict else None
    if type(records) is not list:
        # The SSE id is "<last seq_num in batch>,<count>,<bytes>": resume after the batch.
        # Only ever forward: a bogus id must not make a resume replay what was delivered.
        match = _SEQ_PREFIX.match(event.id or "")
        if match and _is_later(match.group(1), state.cursor):
            state.cursor = match.group(1)
        logger.warning("Skipped a malformed stream batch (cursor now %s)", state.cursor)
        return
    seen = state.seen_ids
    order = state.seen_order
    for record in records:
        if type(record) is not dict:
            continue
        seq_num = record.get("seq_num")
        if type(seq_num) is not int:
            logger.warning("Skipped a stream record without an integer seq_num")
            continue
        part_id = str(seq_num)
        # The cursor moves past every record, shown or not, so a resume lands after it.
        state.cursor = part_id
        headers = record.get("headers")
        if headers:
            first = headers[0] if type(headers) is list else None
            if type(first) is list and first and first[0] == "":
                continue  # an S2 command record (trim, fence): not application data
            part_headers = _record_headers(headers)
        else:
            part_headers = ()
        body = record.get("body")
        envelope = _safe_parse_json(body) if type(body) is str else None
        record_id: Any = None
        chunk: Any = None
        if type(envelope) is dict:
            record_id = envelope.get("id")
            chunk = envelope.get("data")
            if record_id and isinstance(record_id, str | int | float):
                if record_id in seen:
                    continue
                seen.add(record_id)
                order.append(record_id)
                if len(order) > SEEN_IDS_CAP:
                    seen.discard(order.popleft())
            if record_id is not None and type(record_id) is not str:
                record_id = json.dumps(record_id)
        timestamp = record.get("timestamp")
        yield StreamPart(
            part_id,
            chunk,
            timestamp if type(timestamp) is int else int(time.time() * 1000),
            record_id,
            part_headers,
        )
    if type(batch.get("tail")) is dict:
        _caught_up(state)


def _caught_up(state: _StreamState) -> None:
    if not state.caught_up:
        state.caught_up = True
        if state.on_caught_up is not None:
            state.on_caught_up()


async def _next_chunk(body: ResponseBody, stall_timeout: float | None) -> bytes | None:
    """The body's next chunk (``None`` at its end); with ``stall_timeout``, fail when it goes
    quiet for that long."""
    if stall_timeout is None:
        return await body.next_chunk()
    try:
        async with asyncio.timeout(stall_timeout):
            return await body.next_chunk()
    except TimeoutError:
        raise _RetryableFailure(f"nothing received for {stall_timeout:g} s (stalled)") from None


async def _error_message(body: ResponseBody) -> str:
    data = bytearray()
    try:
        # Bounded in size and time: the status alone decides what happens next.
        async with asyncio.timeout(CONNECT_TIMEOUT):
            while len(data) < _ERROR_BODY_LIMIT and (chunk := await body.next_chunk()) is not None:
                data += chunk
    except (httpx.RequestError, TimeoutError):
        pass
    return _message_from_body(bytes(data), body.response.headers)


def _message_from_body(body: bytes, headers: httpx.Headers) -> str:
    """The server's message: the JSON ``error`` field, else the plain-text body."""
    text = body[:_ERROR_BODY_LIMIT].decode("utf-8", "replace").strip()
    if not text:
        return ""
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):
        parsed = None
    if isinstance(parsed, dict):
        error = parsed.get("error") or parsed.get("message")
        if isinstance(error, str):
            return error
    return text[:500]
