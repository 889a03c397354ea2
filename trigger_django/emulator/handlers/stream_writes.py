"""Writing streams: ``PUT``/``POST``/``HEAD /realtime/v1/streams/{run}/{target}/{key}`` and
``POST …/append`` (§2.7)."""

from __future__ import annotations

import math

from trigger_django.emulator.http import HttpError, ShuttingDown, Utf8Decoder, js_parse_int
from trigger_django.emulator.routing import Call
from trigger_django.emulator.state import EmulatorState, RecordTooLargeError, Run

APPEND_MAX_BYTES = 512 * 1024
STREAM_TARGETS = ("self", "parent", "root")


async def write_stream(call: Call) -> None:
    request, response = call.request, call.response
    run_id = call.params["run"]
    target = call.params["target"]
    key = call.params["key"]
    call.secret_only()
    run = write_target(call.state, run_id, target)
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
    await _ingest(call, run, key, client_id)


async def _ingest(call: Call, run: Run, key: str, client_id: str) -> None:
    request, response = call.request, call.response
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
    decoder = Utf8Decoder()
    try:
        async for raw in request.chunks(stop=call.state.closing):
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


async def append(call: Call) -> None:
    request, response = call.request, call.response
    run_id = call.params["run"]
    target = call.params["target"]
    key = call.params["key"]
    call.secret_only()
    length = request.header("content-length")
    if length is None or not length.strip().isdigit() or int(length) > APPEND_MAX_BYTES:
        raise HttpError(413, {"error": "Request body too large"})
    run = write_target(call.state, run_id, target)
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


def write_target(state: EmulatorState, run_id: str, target: str) -> Run:
    if target not in STREAM_TARGETS:
        raise HttpError(
            400, {"error": f"Invalid target {target!r}: expected self, parent or root."}
        )
    run = state.runs.get(run_id)
    if run is None:
        raise HttpError(404, "Run not found")
    if target != "self":
        # Emulated runs have no parent or root run.
        raise HttpError(404, "Target not found")
    return run
