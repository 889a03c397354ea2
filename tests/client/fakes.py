"""Scripted upstreams for client unit tests: an httpx transport replaying canned responses."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any

import httpx


class ChunkStream(httpx.AsyncByteStream):
    """A response body delivered in the given byte chunks.

    ``error`` is raised after the last chunk (an abrupt end); ``hang`` blocks after the last chunk
    until the stream is closed (a stalled or long-lived body). ``closed`` is set by ``aclose``.
    """

    def __init__(
        self,
        chunks: Sequence[bytes],
        *,
        error: Exception | None = None,
        hang: bool = False,
    ) -> None:
        self.chunks = list(chunks)
        self.error = error
        self.hang = hang
        self.closed = asyncio.Event()
        self.delivered = 0

    async def __aiter__(self):  # type: ignore[override]
        for chunk in self.chunks:
            self.delivered += 1
            yield chunk
        if self.error is not None:
            raise self.error
        if self.hang:
            await self.closed.wait()

    async def aclose(self) -> None:
        self.closed.set()


def sse(*events: str | dict[str, Any]) -> bytes:
    """Encode events: a string is sent verbatim; a dict maps field names to values."""
    out = []
    for event in events:
        if isinstance(event, str):
            out.append(event)
            continue
        lines = []
        for name, value in event.items():
            if name == "data" and not isinstance(value, str):
                value = json.dumps(value)
            lines.append(f"{name}: {value}\n")
        out.append("".join(lines) + "\n")
    return "".join(out).encode()


def record(
    seq: int,
    data: Any,
    *,
    record_id: str | None = None,
    ts: int = 1_700_000_000_000,
    headers: list[list[str]] | None = None,
    body: str | None = None,
) -> dict[str, Any]:
    rec: dict[str, Any] = {"seq_num": seq, "timestamp": ts}
    if headers is not None:
        rec["headers"] = headers
    rec["body"] = (
        body
        if body is not None
        else json.dumps({"data": data, "id": record_id if record_id is not None else f"r{seq}"})
    )
    return rec


def batch(*records: dict[str, Any]) -> dict[str, str]:
    last = records[-1]["seq_num"] if records else 0
    return {
        "event": "batch",
        "id": f"{last},{len(records)},100",
        "data": json.dumps({"records": list(records)}),
    }


def v2_response(
    body: bytes | Sequence[bytes],
    *,
    error: Exception | None = None,
    hang: bool = False,
    status: int = 200,
) -> httpx.Response:
    chunks = [body] if isinstance(body, bytes) else list(body)
    stream = ChunkStream(chunks, error=error, hang=hang)
    response = httpx.Response(
        status,
        headers={"content-type": "text/event-stream", "x-stream-version": "v2"},
        stream=stream,
    )
    response.fake = stream  # type: ignore[attr-defined]  # httpx wraps .stream once sent
    return response


def v1_response(
    body: bytes | Sequence[bytes], *, error: Exception | None = None, hang: bool = False
) -> httpx.Response:
    chunks = [body] if isinstance(body, bytes) else list(body)
    stream = ChunkStream(chunks, error=error, hang=hang)
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=stream)
    response.fake = stream  # type: ignore[attr-defined]
    return response


def dropped() -> httpx.RemoteProtocolError:
    return httpx.RemoteProtocolError("peer closed connection without sending complete message body")


Step = httpx.Response | Exception | Callable[[httpx.Request], Any]


class Script:
    """A transport answering successive requests with successive steps.

    A step is a response, an exception to raise (a network error), or an async callable taking
    the request. Requests are recorded in ``requests``; running out of steps fails the test.
    """

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []
        self.responses: list[httpx.Response] = []
        self.transport = httpx.MockTransport(self._handle)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.steps:
            raise AssertionError(f"unexpected request #{len(self.requests)}: {request.url}")
        step = self.steps.pop(0)
        if isinstance(step, Exception):
            raise step
        if callable(step) and not isinstance(step, httpx.Response):
            step = await step(request)
        assert isinstance(step, httpx.Response)
        self.responses.append(step)
        return step

    def header(self, index: int, name: str) -> str | None:
        return self.requests[index].headers.get(name)


class RecordingSleep:
    """An injectable ``retry_sleep`` that records the delays and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)
