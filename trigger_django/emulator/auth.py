"""Credentials as the Trigger.dev server reads them: secret keys, public JWTs and scopes (§4)."""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import jwt

JWT_ISSUER = "https://id.trigger.dev"
JWT_AUDIENCE = "https://api.trigger.dev"

INVALID_API_KEY = "Invalid or Missing API key"
INVALID_PUBLIC_TOKEN = "Public Access Token is invalid"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|secs|m|min|mins|h|hr|hrs|d|day|days|w|y)\s*$")
_UNIT_SECONDS = {
    "s": 1,
    "sec": 1,
    "secs": 1,
    "m": 60,
    "min": 60,
    "mins": 60,
    "h": 3600,
    "hr": 3600,
    "hrs": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
    "w": 604800,
    "y": 31557600,
}


class AuthError(Exception):
    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class Credentials:
    kind: Literal["secret", "jwt"]
    scopes: tuple[str, ...] = ()
    claims: Mapping[str, Any] = field(default_factory=dict)
    token: str = ""

    @property
    def one_time_use(self) -> bool:
        return self.kind == "jwt" and self.claims.get("otu") is True


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authenticate(token: str | None, secret_key: str, *, allow_jwt: bool) -> Credentials:
    """The credentials of a request, or :class:`AuthError` with the server's message."""
    if token is None:
        raise AuthError(INVALID_API_KEY)
    if token == secret_key:
        return Credentials("secret", token=token)
    if not allow_jwt or not _looks_like_public_jwt(token):
        # A JWT on a secret-only route is just an unknown API key to the real server.
        raise AuthError(INVALID_API_KEY)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            claims = jwt.decode(
                token,
                secret_key,
                algorithms=["HS256"],
                audience=JWT_AUDIENCE,
                issuer=JWT_ISSUER,
            )
    except jwt.PyJWTError as error:
        raise AuthError(INVALID_PUBLIC_TOKEN) from error
    scopes = claims.get("scopes")
    scope_list = tuple(str(s) for s in scopes) if isinstance(scopes, list) else ()
    return Credentials("jwt", scopes=scope_list, claims=claims, token=token)


def _looks_like_public_jwt(token: str) -> bool:
    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return False
    return unverified.get("pub") is True


def unverified_scopes(token: str | None) -> list[str] | None:
    """The scopes of a JWT without checking it (for the request log only)."""
    if not token or token.startswith("tr_"):
        return None
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    scopes = claims.get("scopes")
    return [str(s) for s in scopes] if isinstance(scopes, list) else []


def scope_matches(scope: str, action: str, resource_type: str, resource_id: str) -> bool:
    """§4.3: ``action:type[:id]``, only the first two colons split; ``admin`` matches all."""
    if scope == "admin":
        return True
    parts = scope.split(":", 2)
    if len(parts) < 2:
        return False
    scope_action, scope_type = parts[0], parts[1]
    scope_id = parts[2] if len(parts) == 3 else None
    if scope_action not in (action, "*"):
        return False
    if scope_type not in (resource_type, "all"):
        return False
    return scope_id is None or scope_id == resource_id


def authorized(credentials: Credentials, action: str, resources: Iterable[tuple[str, str]]) -> bool:
    """Whether the credentials may perform ``action`` on any of ``(type, id)`` resources."""
    if credentials.kind == "secret":
        return True
    wanted = list(resources)
    return any(
        scope_matches(scope, action, kind, ident)
        for scope in credentials.scopes
        for kind, ident in wanted
    )


def expiry_seconds(value: Any, default: float) -> float:
    """An ``expirationTime`` (``"15m"``, ``"1h"``, or epoch seconds) as an absolute epoch time."""
    now = time.time()
    if value is None:
        return now + default
    if isinstance(value, bool):
        raise ValueError("expirationTime must be a duration like '15m' or an epoch timestamp.")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return now + float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    raise ValueError(f"Invalid expirationTime {value!r}: use a duration like '15m' or '1h'.")


def sign_public_token(
    secret_key: str,
    *,
    env_id: str,
    scopes: list[str] | None,
    expires_at: float,
    one_time_use: bool = False,
    realtime: Any = None,
) -> str:
    """A public access token exactly as the SDK's ``generateJWT`` signs it."""
    payload: dict[str, Any] = {"sub": env_id, "pub": True}
    if scopes is not None:
        payload["scopes"] = scopes
    if one_time_use:
        payload["otu"] = True
    if realtime is not None:
        payload["realtime"] = realtime
    payload.update(iss=JWT_ISSUER, aud=JWT_AUDIENCE, iat=int(time.time()), exp=int(expires_at))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return jwt.encode(payload, secret_key, algorithm="HS256", headers={"typ": None})
