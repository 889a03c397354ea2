"""Public access tokens: ``/api/v1/auth/jwt/claims``, ``/api/v1/auth/public-tokens`` and
``/api/v1/auth/jwt`` (§4.2)."""

from __future__ import annotations

from trigger_django.emulator.auth import expiry_seconds, sign_public_token
from trigger_django.emulator.http import HttpError
from trigger_django.emulator.routing import Call

CONTROL_MAX_BYTES = 1024 * 1024
PUBLIC_TOKEN_TTL = 900


async def jwt_claims(call: Call) -> None:
    call.secret_only()
    await call.response.json(200, {"sub": call.config.env_id, "pub": True})


async def public_token(call: Call) -> None:
    request, response = call.request, call.response
    call.secret_only()
    body = await request.json(CONTROL_MAX_BYTES)
    if not isinstance(body, dict):
        raise HttpError(400, {"error": "Invalid request body: expected an object."})
    scopes = body.get("scopes")
    if not isinstance(scopes, list) or not scopes or not all(isinstance(s, str) for s in scopes):
        raise HttpError(400, {"error": "scopes must be a non-empty array of strings."})
    try:
        expires_at = expiry_seconds(body.get("expirationTime"), PUBLIC_TOKEN_TTL)
    except ValueError as error:
        raise HttpError(400, {"error": str(error)}) from None
    minted = sign_public_token(
        call.config.secret_key,
        env_id=call.config.env_id,
        scopes=scopes,
        expires_at=expires_at,
        one_time_use=body.get("oneTimeUse") is True,
        realtime=body.get("realtime"),
    )
    await response.json(200, {"token": minted})


async def mint_jwt(call: Call) -> None:
    request, response = call.request, call.response
    call.secret_only()
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
        call.config.secret_key,
        env_id=call.config.env_id,
        scopes=[str(s) for s in scopes] if isinstance(scopes, list) else None,
        expires_at=expires_at,
    )
    await response.json(200, {"token": minted})
