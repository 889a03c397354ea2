"""Triggering: ``POST /api/v1/tasks/{task}/trigger`` (§6)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

from trigger_django.emulator.auth import authenticate, authorized, expiry_seconds, sign_public_token
from trigger_django.emulator.http import HttpError, unauthorized
from trigger_django.emulator.routing import Call
from trigger_django.emulator.state import Run, StreamVersion, js_json
from trigger_django.emulator.tasks import execute, registered_task

TRIGGER_MAX_BYTES = 3 * 1024 * 1024
TRIGGER_TOKEN_TTL = 3600


async def trigger(call: Call) -> None:
    request, response, token = call.request, call.response, call.token
    task_id = call.params["task"]
    credentials = authenticate(token, call.config.secret_key, allow_jwt=True)
    if not authorized(credentials, "trigger", [("tasks", task_id)]):
        raise unauthorized()
    if credentials.one_time_use and token_hash(credentials.token) in (
        call.state.used_one_time_tokens
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
        call.state.used_one_time_tokens.add(token_hash(credentials.token))

    run: Run | None = None
    is_cached = False
    if idempotency_key:
        cached_id = call.state.idempotency.get((task_id, str(idempotency_key)))
        run = call.state.runs.get(cached_id) if cached_id else None
        is_cached = run is not None
    if run is None:
        requested_version = request.header("x-trigger-realtime-streams-version")
        version: StreamVersion = "v2" if requested_version == "v2" else call.config.stream_version
        run = Run(
            id=call.state.new_run_id(),
            task_identifier=task_id,
            payload=payload,
            payload_type=payload_type,
            raw_payload=raw_payload,
            stream_version=version,
            tags=tags,
            idempotency_key=str(idempotency_key) if idempotency_key else None,
            number=len(call.state.runs) + 1,
        )
        call.state.runs[run.id] = run
        if idempotency_key:
            call.state.idempotency[(task_id, str(idempotency_key))] = run.id
        function = registered_task(task_id)
        if function is not None:
            run.task = asyncio.create_task(execute(function, run, call.config))

    scopes = [f"read:runs:{run.id}", f"write:inputStreams:{run.id}"]
    claims = {"sub": call.config.env_id, "pub": True, "scopes": scopes}
    jwt_token = sign_public_token(
        call.config.secret_key,
        env_id=call.config.env_id,
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


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


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
