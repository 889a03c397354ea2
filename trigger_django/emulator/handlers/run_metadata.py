"""Run metadata: ``PUT /api/v1/runs/{run}/metadata``, as the SDK's ``metadata`` calls use it."""

from __future__ import annotations

from trigger_django.emulator.http import HttpError
from trigger_django.emulator.metadata import MetadataError, apply_operations, validate_body
from trigger_django.emulator.routing import Call
from trigger_django.emulator.state import js_json, now_ms

METADATA_MAX_BYTES = 2 * 1024 * 1024
#: The server still accepts metadata for an hour after a run completed.
METADATA_WINDOW_MS = 60 * 60 * 1000


async def update_metadata(call: Call) -> None:
    request, response = call.request, call.response
    run_id = call.params["run"]
    call.secret_only()
    length = request.header("content-length")
    if length is not None and length.strip().isdigit() and int(length) > METADATA_MAX_BYTES:
        raise HttpError(413, {"error": "Request body too large"})
    body = await request.json(METADATA_MAX_BYTES)
    try:
        operations, metadata = validate_body(body)
    except MetadataError as error:
        raise HttpError(400, {"error": f"Invalid request body: {error}."}) from None
    run = call.state.runs.get(run_id)
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
