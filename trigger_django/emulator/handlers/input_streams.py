"""Sending to input streams: ``POST /realtime/v1/streams/{run}/input/{id}`` (§3.1)."""

from __future__ import annotations

import json
import uuid

from trigger_django.emulator.auth import authenticate, authorized
from trigger_django.emulator.http import HttpError, unauthorized
from trigger_django.emulator.routing import Call
from trigger_django.emulator.state import (
    INPUT_STREAM_PREFIX,
    InputReceived,
    RecordTooLargeError,
    js_json,
    now_ms,
)

INPUT_MAX_BYTES = 1024 * 1024


async def send_input(call: Call) -> None:
    request, response, token = call.request, call.response, call.token
    run_id = call.params["run"]
    stream_id = call.params["stream"]
    credentials = authenticate(token, call.config.secret_key, allow_jwt=True)
    length = request.header("content-length")
    if length is None or not length.strip().isdigit() or int(length) > INPUT_MAX_BYTES:
        raise HttpError(413, {"error": "Request body too large"})
    if not authorized(credentials, "write", [("inputStreams", run_id)]):
        raise unauthorized()
    run = call.state.runs.get(run_id)
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
