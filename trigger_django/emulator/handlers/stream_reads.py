"""Reading streams: ``GET /realtime/v1/streams/{run}/{key}`` and the input-stream tail
``GET /realtime/v1/streams/{run}/input/{id}`` (SSE, v1 or v2 framing; §2, §3.2)."""

from __future__ import annotations

import asyncio
import math

from trigger_django.emulator.auth import authenticate
from trigger_django.emulator.http import HttpError, js_parse_int, wait_disconnect
from trigger_django.emulator.routing import Call, authorize_read
from trigger_django.emulator.sse import ReadSession, serve_stream
from trigger_django.emulator.state import INPUT_STREAM_PREFIX, parse_v2_last_event_id


async def read_output(call: Call) -> None:
    await _read(call, call.params["key"], is_input=False)


async def read_input(call: Call) -> None:
    await _read(call, call.params["stream"], is_input=True)


async def _read(call: Call, key: str, *, is_input: bool) -> None:
    request, response, token = call.request, call.response, call.token
    run_id = call.params["run"]
    credentials = authenticate(token, call.config.secret_key, allow_jwt=True)
    run = call.run_or_404(run_id)
    authorize_read(credentials, run)
    timeout = timeout_seconds(request.header("timeout-seconds"), is_input)
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

    fault = call.state.take_fault(run.id, name)
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

    disconnected = asyncio.ensure_future(wait_disconnect(request))
    session = ReadSession(
        stream=stream,
        version=version,
        start=start,
        idle_timeout=float(timeout) if timeout else call.config.idle_timeout,
        ping_interval=call.config.ping_interval,
        disconnected=disconnected,
        closing=call.state.closing,
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


def timeout_seconds(header: str | None, is_input: bool) -> int | None:
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
