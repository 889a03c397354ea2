"""Public access tokens: signing them as the official SDK does, verifying them, matching scopes.

Tokens are HS256 JWTs signed with the environment's secret API key, with the protected header
exactly ``{"alg":"HS256"}`` and the claims ``{...claims, iss, aud, exp, iat}`` that ``jose``'s
``SignJWT`` produces in ``@trigger.dev/core``'s ``generateJWT``.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import jwt

from ._errors import InvalidTokenError

JWT_ISSUER = "https://id.trigger.dev"
JWT_AUDIENCE = "https://api.trigger.dev"
JWT_ALGORITHM = "HS256"

#: What :func:`sign_public_token` and :meth:`TriggerClient.create_public_token` accept as
#: ``expiration``: a jose time span ("15m", "1h", "2 days"), a lifetime in seconds (int or
#: timedelta), or an absolute ``datetime``.
Expiration = str | int | float | timedelta | datetime

#: Scopes as the SDK's ``auth.createPublicToken`` takes them,
#: ``{"read": {"runs": ["run_1"]}, "write": {"inputStreams": ["run_1"]}}``, or already flat.
Scopes = Mapping[str, Any] | Sequence[str]

try:
    from jwt.warnings import InsecureKeyLengthWarning as _ShortKeyWarning
except ImportError:  # PyJWT < 2.10 does not warn
    _ShortKeyWarning = None  # type: ignore[assignment,misc]


@contextmanager
def _trigger_key_lengths() -> Iterator[None]:
    # Trigger.dev's keys (tr_dev_ + 20 characters) are shorter than PyJWT's recommended 32 bytes
    # for HS256, but they are the keys the server signs and verifies with: nothing to act on.
    with warnings.catch_warnings():
        if _ShortKeyWarning is not None:
            warnings.simplefilter("ignore", _ShortKeyWarning)
        yield


_MINUTE = 60
_HOUR = 60 * _MINUTE
_DAY = 24 * _HOUR
_WEEK = 7 * _DAY
_YEAR = 365.25 * _DAY
# jose's `secs()` grammar (lib/secs.js), so "15m", "1 hour", "2d", "1.5h", "3 days from now".
_TIMESPAN = re.compile(
    r"^(\+|-)? ?(\d+|\d*\.\d+) ?(seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h|days?|d|"
    r"weeks?|w|years?|yrs?|y)(?: (ago|from now))?$",
    re.IGNORECASE,
)
_UNIT_SECONDS: dict[str, float] = {}
for _names, _seconds in (
    (("sec", "secs", "second", "seconds", "s"), 1.0),
    (("minute", "minutes", "min", "mins", "m"), float(_MINUTE)),
    (("hour", "hours", "hr", "hrs", "h"), float(_HOUR)),
    (("day", "days", "d"), float(_DAY)),
    (("week", "weeks", "w"), float(_WEEK)),
    (("year", "years", "yr", "yrs", "y"), _YEAR),
):
    for _name in _names:
        _UNIT_SECONDS[_name] = _seconds


def parse_timespan(text: str) -> int:
    """Seconds in a jose time span such as ``"15m"`` or ``"2 days"`` (negative for ``"ago"``)."""
    match = _TIMESPAN.match(text)
    if match is None or (match.group(4) and match.group(1)):
        raise ValueError(
            f"Invalid expiration {text!r}: expected a time span such as '15m', '1h' or '2d', "
            "a number of seconds, or a datetime"
        )
    seconds = _js_round(float(match.group(2)) * _UNIT_SECONDS[match.group(3).lower()])
    return -seconds if match.group(1) == "-" or match.group(4) == "ago" else seconds


def _js_round(value: float) -> int:
    # JavaScript's Math.round rounds halves up, Python's round() to even.
    return int(value + 0.5) if value >= 0 else -int(-value + 0.5)


def expiration_timestamp(expiration: Expiration, *, now: int) -> int:
    """The ``exp`` claim (epoch seconds) for ``expiration`` relative to ``now``."""
    if isinstance(expiration, bool):
        raise TypeError("expiration must be a time span string, seconds, timedelta or datetime")
    if isinstance(expiration, str):
        return now + parse_timespan(expiration)
    if isinstance(expiration, datetime):
        if expiration.tzinfo is None:
            raise ValueError("expiration datetime must be timezone-aware")
        return int(expiration.timestamp())
    if isinstance(expiration, timedelta):
        return now + int(expiration.total_seconds())
    if isinstance(expiration, int | float):
        return now + int(expiration)
    raise TypeError(
        f"expiration must be a time span string, seconds, timedelta or datetime, "
        f"not {type(expiration).__name__}"
    )


def flatten_scopes(scopes: Scopes) -> list[str]:
    """Scope strings from the SDK's nested form (``auth.createPublicToken``'s ``flattenScopes``).

    ``{"read": {"runs": ["run_1"], "tags": "x"}}`` gives ``["read:runs:run_1", "read:tags:x"]``;
    ``{"read": {"runs": True}}`` gives ``["read:runs"]``; ``{"admin": True}`` gives ``["admin"]``.
    A sequence of strings is taken as already flat.
    """
    if isinstance(scopes, str):
        raise TypeError("scopes must be a mapping or a list of scope strings, not a string")
    if not isinstance(scopes, Mapping):
        flat = list(scopes)
        for scope in flat:
            if not isinstance(scope, str) or not scope:
                raise ValueError(f"Invalid scope {scope!r}: scopes must be non-empty strings")
        return flat
    flattened: list[str] = []
    for action, properties in scopes.items():
        if not properties:
            continue
        if properties is True:
            flattened.append(action)
        elif isinstance(properties, Mapping):
            for resource_type, value in properties.items():
                if isinstance(value, str):
                    flattened.append(_scope_with_id(action, resource_type, value))
                elif value is True:
                    flattened.append(f"{action}:{resource_type}")
                elif isinstance(value, Iterable) and not isinstance(value, bytes | Mapping):
                    flattened.extend(_scope_with_id(action, resource_type, i) for i in value)
    return flattened


def _scope_with_id(action: str, resource_type: str, resource_id: object) -> str:
    if not isinstance(resource_id, str) or not resource_id.strip():
        raise ValueError(
            f"Public token scope resource IDs must not be empty "
            f"(got {resource_id!r} for {action}:{resource_type})"
        )
    return f"{action}:{resource_type}:{resource_id}"


def sign_public_token(
    secret_key: str,
    *,
    sub: str,
    scopes: Scopes | None,
    expiration: Expiration = "15m",
    realtime: Mapping[str, Any] | None = None,
    extra_claims: Mapping[str, Any] | None = None,
) -> str:
    """Sign a public access token locally, byte-compatible with the SDK's ``generateJWT``.

    ``sub`` is the environment id (from ``POST /api/v1/auth/jwt/claims``). ``scopes=None`` omits
    the claim (the token then grants nothing), as the SDK does.
    """
    if not secret_key:
        raise ValueError("A secret key is needed to sign a public access token")
    now = int(time.time())
    claims: dict[str, Any] = {**(extra_claims or {}), "sub": sub, "pub": True}
    if scopes is not None:
        claims["scopes"] = flatten_scopes(scopes)
    if realtime is not None:
        claims["realtime"] = dict(realtime)
    return _sign(secret_key, claims, expiration, now=now)


def _sign(secret_key: str, claims: Mapping[str, Any], expiration: Expiration, *, now: int) -> str:
    payload = {
        **claims,
        "iss": JWT_ISSUER,
        "aud": JWT_AUDIENCE,
        "exp": expiration_timestamp(expiration, now=now),
        "iat": now,
    }
    # headers={"typ": None} drops PyJWT's "typ", leaving exactly {"alg":"HS256"} like jose.
    with _trigger_key_lengths():
        return jwt.encode(payload, secret_key, algorithm=JWT_ALGORITHM, headers={"typ": None})


def verify_public_token(token: str, secret_key: str) -> list[str]:
    """Check a public access token and return its scopes (see :func:`decode_public_token`)."""
    scopes: list[str] = decode_public_token(token, secret_key)["scopes"]
    return scopes


def decode_public_token(token: str, secret_key: str) -> dict[str, Any]:
    """Check a public access token and return its claims.

    Verifies the HS256 signature with ``secret_key``, the issuer, the audience, the expiry and
    ``pub: true``, and that ``scopes`` (``[]`` when absent) is a list of strings. Raises
    :class:`InvalidTokenError` saying what was wrong.
    """
    if not token:
        raise InvalidTokenError("No public access token given")
    try:
        with _trigger_key_lengths():
            payload = jwt.decode(
                token,
                secret_key,
                algorithms=[JWT_ALGORITHM],
                audience=JWT_AUDIENCE,
                issuer=JWT_ISSUER,
                options={"require": ["exp"]},
            )
    except jwt.ExpiredSignatureError as exc:
        raise InvalidTokenError("Public access token has expired") from exc
    except jwt.InvalidSignatureError as exc:
        raise InvalidTokenError(
            "Public access token signature does not match this secret key"
        ) from exc
    except jwt.InvalidAudienceError as exc:
        raise InvalidTokenError(f"Public access token audience is not {JWT_AUDIENCE}") from exc
    except jwt.InvalidIssuerError as exc:
        raise InvalidTokenError(f"Public access token issuer is not {JWT_ISSUER}") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidTokenError(f"Public access token lacks the {exc.claim!r} claim") from exc
    except jwt.InvalidTokenError as exc:
        raise InvalidTokenError(f"Public access token is invalid: {exc}") from exc
    if payload.get("pub") is not True:
        raise InvalidTokenError("Token is not a public access token (its 'pub' claim is not true)")
    scopes = payload.setdefault("scopes", [])
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise InvalidTokenError("Public access token 'scopes' claim is not a list of strings")
    return payload


def _parse_scope(scope: str) -> tuple[str, str | None, str | None] | None:
    # The server's parseScope: only the first two colons split, so ids may hold colons.
    action, colon, rest = scope.partition(":")
    if not action:
        return None
    if not colon:
        return action, None, None
    resource_type, colon, resource_id = rest.partition(":")
    if not colon:
        return action, resource_type or None, None
    if not resource_id.strip():
        return None
    return action, resource_type or None, resource_id


def scope_allows(
    scopes: Iterable[str], action: str, resource_type: str, resource_id: str | None = None
) -> bool:
    """Whether ``scopes`` grant ``action`` on a resource, by the server's matching rules.

    Bare ``admin`` grants everything; a scope with action ``*`` matches any action; type ``all``
    matches any type; a scope without an id matches every id of its type. ``resource_id=None``
    asks about the whole type, which only type-level scopes grant.
    """
    for scope in scopes:
        parsed = _parse_scope(scope)
        if parsed is None:
            continue
        scope_action, scope_type, scope_id = parsed
        if scope_action == "admin" and scope_type is None:
            return True
        if scope_type is None or scope_action not in (action, "*"):
            continue
        if scope_type == "all":
            return True
        if scope_type != resource_type:
            continue
        if scope_id is None or (resource_id is not None and scope_id == resource_id):
            return True
    return False
