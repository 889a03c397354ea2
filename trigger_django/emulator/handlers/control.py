"""The emulator's own control API under ``/_emulator/`` (secret key only): the request log,
fault injection, and runs (inspect, update, fail, complete)."""

from __future__ import annotations

from typing import Any

from trigger_django.emulator.http import HttpError
from trigger_django.emulator.routing import Call
from trigger_django.emulator.state import Run

CONTROL_MAX_BYTES = 1024 * 1024


async def list_requests(call: Call) -> None:
    call.secret_only()
    await call.response.json(200, [entry.to_json() for entry in call.state.requests])


async def clear_requests(call: Call) -> None:
    call.secret_only()
    call.state.clear_requests()
    await call.response.json(200, {"ok": True})


async def inject_fault(call: Call) -> None:
    call.secret_only()
    body = await call.request.json(CONTROL_MAX_BYTES)
    if not isinstance(body, dict):
        raise HttpError(400, {"error": "Expected a JSON object."})
    try:
        run_id = str(body.pop("run_id"))
        key = str(body.pop("key"))
        kind = str(body.pop("kind"))
        call.state.inject_fault(run_id, key, kind, **body)
    except KeyError as error:
        raise HttpError(400, {"error": f"Missing field {error.args[0]!r}."}) from None
    except (TypeError, ValueError) as error:
        raise HttpError(400, {"error": str(error)}) from None
    await call.response.json(200, {"ok": True})


async def show_run(call: Call) -> None:
    call.secret_only()
    await call.response.json(200, call.run_or_404(call.params["run"]).to_json())


async def _run_and_body(call: Call) -> tuple[Run, Any]:
    call.secret_only()
    run = call.run_or_404(call.params["run"])
    return run, await call.request.json(CONTROL_MAX_BYTES)


async def update_run(call: Call) -> None:
    run, body = await _run_and_body(call)
    if not isinstance(body, dict):
        raise HttpError(400, {"error": 'Expected an object like {"status": "…"}.'})
    try:
        call.state.update_run(
            run.id,
            status=body.get("status"),
            metadata=body.get("metadata"),
            tags=body.get("tags"),
        )
    except (TypeError, ValueError) as error:
        raise HttpError(400, {"error": str(error)}) from None
    await call.response.json(200, run.to_json())


async def fail_run(call: Call) -> None:
    run, body = await _run_and_body(call)
    failure = body.get("error") if isinstance(body, dict) else None
    call.state.fail_run(run.id, failure if failure is not None else "Failed by the test")
    await call.response.json(200, run.to_json())


async def complete_run(call: Call) -> None:
    run, body = await _run_and_body(call)
    output = body.get("output") if isinstance(body, dict) else None
    call.state.complete_run(run.id, output)
    await call.response.json(200, run.to_json())
