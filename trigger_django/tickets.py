"""Signed subscription tickets and the permission hook.

A page never carries a Trigger.dev credential wider than "read this one run". What it carries
to subscribe is a *ticket*: a ``django.core.signing`` value (own salt, timestamped) naming the
user, the run and the stream key, and optionally a public access token that already has exactly
``read:runs:<run_id>``. The WebSocket consumer checks the ticket before any upstream request.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Any, Literal

from django.core import signing
from django.utils.module_loading import import_string

from trigger_django.client import InvalidTokenError, decode_public_token
from trigger_django.conf import get_config
from trigger_django.errors import RequestError

__all__ = [
    "RUN_WIDE",
    "TICKET_SALT",
    "InvalidIdentifier",
    "Ticket",
    "TicketError",
    "check_authorized",
    "is_run_read_token",
    "load_ticket",
    "make_ticket",
    "validate_run_id",
    "validate_stream_key",
]

TICKET_SALT = "trigger_django.stream-ticket.v1"

# Run ids are friendly ids (`run_…`); stream keys go into the upstream URL path, so neither may
# contain `/` or anything else that would change the path. Always matched with `fullmatch`:
# `$` also matches before a trailing newline, and `run_1\n` is not a run id.
_RUN_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
_STREAM_KEY_RE = re.compile(r"[A-Za-z0-9_.:$-]{1,256}")


class InvalidIdentifier(RequestError, ValueError):
    """A run id or stream key that is not one (400). Also a ``ValueError``."""


def validate_run_id(run_id: object) -> str:
    """``run_id`` if it is a well-formed run id, else :class:`InvalidIdentifier`."""
    if not isinstance(run_id, str) or not _RUN_ID_RE.fullmatch(run_id):
        raise InvalidIdentifier(
            f"Invalid run id {run_id!r}: expected a Trigger.dev run id such as 'run_abc123' "
            "(letters, digits, '_' and '-')."
        )
    return run_id


def validate_stream_key(key: object) -> str:
    """``key`` if it is a well-formed stream key (output or input stream id), else
    :class:`InvalidIdentifier`."""
    # "." would be collapsed out of the URL path by the HTTP client ("/streams/run_1/.").
    if not isinstance(key, str) or not _STREAM_KEY_RE.fullmatch(key) or ".." in key or key == ".":
        raise InvalidIdentifier(
            f"Invalid stream key {key!r}: use letters, digits and '_', '-', '.', ':', '$' "
            "(no '/', no '..')."
        )
    return key


#: The ``key`` of a run-wide ticket (``{% run_status %}``, ``{% run_viewer %}``): the run's
#: state and every stream of the run. No stream key can be ``*``.
RUN_WIDE = "*"


@dataclass(frozen=True)
class Ticket:
    user_pk: str | None
    run_id: str
    key: str
    access_token: str | None
    #: Part-template directories by stream key (``"*"``: every stream), chosen by the template
    #: that rendered the page and signed with it, so a page cannot pick other templates.
    part_templates: dict[str, str] | None = None

    def allows_stream(self, key: str) -> bool:
        return self.key == key or self.key == RUN_WIDE

    def part_templates_for(self, key: str) -> str | None:
        if not self.part_templates:
            return None
        return self.part_templates.get(key) or self.part_templates.get(RUN_WIDE)


class TicketError(RequestError):
    """A ticket that must not be honoured (401); ``reason`` is ``"expired"`` or ``"invalid"``."""

    status = 401

    def __init__(self, reason: Literal["expired", "invalid"], message: str) -> None:
        super().__init__(message)
        self.reason = reason


def make_ticket(
    *,
    user_pk: object,
    run_id: str,
    key: str,
    access_token: str | None = None,
    part_templates: dict[str, str] | None = None,
) -> str:
    """Sign a ticket that lets ``user_pk`` read ``run_id``/``key`` for ``TICKET_MAX_AGE`` s
    (``key`` :data:`RUN_WIDE`: the run's state and all its streams)."""
    payload: dict[str, Any] = {
        "u": None if user_pk is None else str(user_pk),
        "r": validate_run_id(run_id),
        "k": _ticket_key(key),
    }
    if access_token is not None:
        payload["t"] = access_token
    if part_templates:
        payload["p"] = dict(part_templates)
    return signing.dumps(payload, salt=TICKET_SALT, compress=True)


def load_ticket(ticket: object, *, max_age: int | None = None) -> Ticket:
    """Verify a ticket's signature and age; raise :class:`TicketError` otherwise."""
    if not isinstance(ticket, str) or not ticket:
        raise TicketError("invalid", "The subscription ticket is missing.")
    limit = get_config().ticket_max_age if max_age is None else max_age
    try:
        payload = signing.loads(ticket, salt=TICKET_SALT, max_age=limit)
    except signing.SignatureExpired as exc:
        raise TicketError(
            "expired", "The subscription ticket has expired; reload the page."
        ) from exc
    except signing.BadSignature as exc:
        raise TicketError("invalid", "The subscription ticket is not valid.") from exc
    if not isinstance(payload, dict):
        raise TicketError("invalid", "The subscription ticket is not valid.")
    try:
        return Ticket(
            user_pk=payload["u"],
            run_id=validate_run_id(payload["r"]),
            key=_ticket_key(payload["k"]),
            access_token=payload.get("t"),
            part_templates=_part_templates(payload.get("p")),
        )
    except (KeyError, ValueError) as exc:
        raise TicketError("invalid", "The subscription ticket is not valid.") from exc


def _ticket_key(key: object) -> str:
    return RUN_WIDE if key == RUN_WIDE else validate_stream_key(key)


def _part_templates(value: object) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError("part templates must map stream keys to template directories")
    return value


def token_claims(token: str) -> dict[str, Any] | None:
    """The verified claims of a public token signed with our secret key, or None."""
    secret_key = get_config().secret_key
    if not secret_key:
        return None
    try:
        return decode_public_token(token, secret_key)
    except InvalidTokenError:
        return None


def is_run_read_token(token: str, run_id: str) -> bool:
    """True only if ``token`` is a valid public token whose scopes are exactly
    ``["read:runs:<run_id>"]``: safe to render into that run's page."""
    claims = token_claims(token)
    if claims is None:
        return False
    return claims.get("scopes") == [f"read:runs:{run_id}"] and not claims.get("otu")


async def check_authorized(user: Any, run_id: str, action: Literal["read", "write"]) -> bool:
    """Call the ``AUTHORIZE`` hook (sync or async) for ``user`` on ``run_id``."""
    from asgiref.sync import sync_to_async

    hook = import_string(get_config().authorize)
    if inspect.iscoroutinefunction(hook):
        result = await hook(user, run_id, action)
    else:
        result = await sync_to_async(hook)(user, run_id, action)
    return bool(result)
