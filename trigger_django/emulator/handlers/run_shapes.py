"""Run subscriptions: ``GET /realtime/v1/runs/{run}``, the single-run Electric shape, live (§5)."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs

from trigger_django.emulator import shapes
from trigger_django.emulator.auth import authenticate
from trigger_django.emulator.http import wait_disconnect
from trigger_django.emulator.routing import Call, authorize_read
from trigger_django.emulator.sse import AbortConnection
from trigger_django.emulator.state import RUN_SHAPE_KEY, Run


async def run_shape(call: Call) -> None:
    request, response, token = call.request, call.response, call.token
    run_id = call.params["run"]
    credentials = authenticate(token, call.config.secret_key, allow_jwt=True)
    run = call.run_or_404(run_id)
    authorize_read(credentials, run)
    query = parse_qs(request.query)
    skip_columns = ",".join(query.get("skipColumns", [])).split(",")
    realtime = credentials.claims.get("realtime")
    if isinstance(realtime, dict) and isinstance(realtime.get("skipColumns"), list):
        # A token's realtime.skipColumns overrides the query parameter, as on the server.
        skip_columns = [str(column) for column in realtime["skipColumns"]]
    offset = query.get("offset", ["-1"])[0]
    # ``shape_id`` is the legacy name of ``handle``.
    handle = query.get("handle", query.get("shape_id", [""]))[0]
    live = query.get("live", [""])[0] == "true"

    if await _shape_fault(call, run):
        return
    if offset == "-1" or not handle:
        await _shape_snapshot(call, run, skip_columns)
        return
    if handle != run.shape_handle:
        # Electric answers a request for a handle that is not the shape's current one with
        # 409 must-refetch, naming the current handle.
        await _must_refetch(call, run)
        return
    if not live:
        # A non-live catch-up with a handle re-emits the snapshot (the native server does).
        await _shape_snapshot(call, run, skip_columns)
        return

    seen = shapes.revision_of(offset)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + shapes.live_hold_seconds()
    disconnected = asyncio.ensure_future(wait_disconnect(request))
    closing = asyncio.ensure_future(call.state.closing.wait())
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
            if call.state.has_fault(run.id, RUN_SHAPE_KEY):
                # Injected while this request was parked: it answers the fault.
                await _shape_fault(call, run)
                return
    finally:
        disconnected.cancel()
        closing.cancel()
    if call.state.closing.is_set():
        raise AbortConnection("the emulator is shutting down")
    call.state.shape_cursor += 1
    cursor = str(call.state.shape_cursor)
    if run.revision > seen:
        headers = _headers(call, run, offset=shapes.offset_for(run), cursor=cursor)
        body = [shapes.change_message(run, "update", skip_columns), shapes.UP_TO_DATE]
    else:
        headers = _headers(call, run, offset=offset, cursor=cursor)
        body = [shapes.UP_TO_DATE]
    await response.json(200, body, headers)


def _headers(
    call: Call,
    run: Run,
    *,
    offset: str | None = None,
    cursor: str | None = None,
    schema: str | None = None,
) -> list[tuple[bytes, bytes]]:
    """The shape's response headers. Like the native server, a request without
    ``x-trigger-electric-version`` (an old client) gets the legacy names
    ``electric-chunk-last-offset`` and ``electric-shape-id``."""
    modern = call.request.header("x-trigger-electric-version") is not None
    headers = [
        (b"cache-control", b"no-store"),
        (b"electric-handle" if modern else b"electric-shape-id", run.shape_handle.encode()),
        (b"access-control-expose-headers", b"*"),
    ]
    if offset is not None:
        name = b"electric-offset" if modern else b"electric-chunk-last-offset"
        headers.append((name, offset.encode()))
    if cursor is not None:
        headers.append((b"electric-cursor", cursor.encode()))
    if schema is not None:
        headers.append((b"electric-schema", schema.encode()))
    return headers


async def _shape_snapshot(call: Call, run: Run, skip_columns: list[str]) -> None:
    headers = _headers(
        call, run, offset=shapes.offset_for(run), schema=shapes.schema_header(skip_columns)
    )
    body = [shapes.change_message(run, "insert", skip_columns), shapes.UP_TO_DATE]
    await call.response.json(200, body, headers)


async def _must_refetch(call: Call, run: Run) -> None:
    await call.response.json(409, [shapes.MUST_REFETCH], _headers(call, run))


async def _shape_fault(call: Call, run: Run) -> bool:
    """Answer an injected shape fault, if one is pending; ``True`` when one was."""
    fault = call.state.take_fault(run.id, RUN_SHAPE_KEY)
    if fault is None:
        return False
    if fault.kind == "must-refetch":
        # The shape is rotated: a new handle, which the client refetches from offset -1.
        run.shape_generation += 1
        await _must_refetch(call, run)
    else:
        body = (
            fault.body
            if fault.body is not None
            else {"error": f"Injected fault: status {fault.status}"}
        )
        await call.response.json(fault.status, body)
    return True
