"""One exception base for the Django layer, and one mapping from any error to an answer.

Every error trigger_django's Django layer raises on purpose derives from
:class:`TriggerDjangoError`; each says whose fault it is (its :attr:`~TriggerDjangoError.party`)
and which HTTP status answers it. :func:`describe` maps *any* exception (ours, the client's
:class:`~trigger_django.client.TriggerError` family, Django's, or a plain bug) to an
:class:`ErrorDescription`; views and the WebSocket consumer answer with it and nothing else::

    from trigger_django.errors import describe

    try:
        ...
    except Exception as exc:
        error = describe(exc)  # ErrorDescription(status=503, message="...", party="upstream")
        return JsonResponse({"error": error.message}, status=error.status)

and, in the WebSocket consumer, one subscription's in-band error::

    except Exception as exc:
        error = describe(exc)
        log_failure(logger, exc, error)  # where it was caught: see log_failure
        await self.send_json(
            {"type": "error", "sub": sub_id, "status": error.status, "message": error.message}
        )

``describe(exc: BaseException) -> ErrorDescription`` never raises and never puts an unexpected
exception's own text (which may hold anything, secrets included) into the message: a bug is
described as a bug, and its details belong in the server log (:func:`log_failure`).

The mapping (also in docs/security.md, *Errors*), as ``exception → status, party``:

* :class:`RequestError` and its subclasses (``TicketError`` 401, ``InvalidIdentifier`` 400,
  ``InvalidIdempotencyKey`` 400, ``UnknownInputForm`` 400) → their own 4xx, ``"request"``;
  the message says what was wrong with the request;
* :class:`ConfigurationError` (``UpstreamConfigurationError`` too) → 503, ``"configuration"``;
* the client's ``AuthenticationError`` / ``PermissionDeniedError`` (Trigger.dev refused this
  server's key or the token it minted) → 503, ``"configuration"``;
* ``RunCompletedError`` → 400, ``NotFoundError`` → 404, ``PayloadTooLargeError`` → 413,
  ``BadRequestError`` → 400, ``UnprocessableEntityError`` → 422, ``InvalidTokenError`` → 400,
  all ``"request"``;
* any other ``APIStatusError`` → 502, ``UpstreamUnavailableError`` → 503, any other
  ``TriggerError`` → 502, all ``"upstream"``;
* Django's ``ImproperlyConfigured`` → 503 ``"configuration"`` (details only in the log);
  ``PermissionDenied`` → 403, ``Http404`` → 404, ``RequestDataTooBig`` → 413,
  ``SuspiciousOperation`` / ``ValidationError`` → 400, all ``"request"``;
* ``asyncio.CancelledError`` and other non-``Exception`` ``BaseException`` → 503, ``"server"``;
* anything else is a bug → 500, ``"server"``, with a message that says so and nothing more.

Each message names the party at fault: "…a problem in this site's configuration…", "…a problem
at Trigger.dev…", "A bug in this server…"; a refused request's message says what to change.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from dataclasses import dataclass
from typing import Final, Literal

from django.core.exceptions import (
    ImproperlyConfigured,
    PermissionDenied,
    RequestDataTooBig,
    SuspiciousOperation,
    ValidationError,
)
from django.http import Http404

from trigger_django.client import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    InvalidTokenError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RunCompletedError,
    TriggerError,
    UnprocessableEntityError,
    UpstreamUnavailableError,
)

__all__ = [
    "CONFIGURATION",
    "REQUEST",
    "SERVER",
    "UPSTREAM",
    "ConfigurationError",
    "ErrorDescription",
    "Party",
    "RequestError",
    "TriggerDjangoError",
    "describe",
    "log_failure",
]

logger = logging.getLogger("trigger_django")

#: Whose fault an error is: this site's configuration, the browser's request, Trigger.dev, or
#: a bug in this server.
Party = Literal["configuration", "request", "upstream", "server"]
CONFIGURATION: Final = "configuration"
REQUEST: Final = "request"
UPSTREAM: Final = "upstream"
SERVER: Final = "server"

_CONFIGURATION_SUFFIX = (
    " This is a problem in this site's configuration, not in your request: "
    "the site's administrators must fix it."
)
_UPSTREAM_SUFFIX = " This is a problem at Trigger.dev, not in your request; try again later."
_BUG_MESSAGE = (
    "A bug in this server stopped the request; it is not a problem with your request or with "
    "Trigger.dev. The details are in the server's log."
)
_CANCELLED_MESSAGE = (
    "The server stopped handling the request before it finished (it may be restarting); "
    "try again in a moment."
)


@dataclass(frozen=True)
class ErrorDescription:
    """How to answer an error: the HTTP (or in-band) ``status``, a ``message`` for the person
    in front of the page, and the ``party`` at fault."""

    status: int
    message: str
    party: Party


class TriggerDjangoError(Exception):
    """Base of every error the Django layer of trigger_django raises on purpose.

    ``message`` is shown to the person in front of the page as it is, so it must never hold a
    secret. ``fields`` optionally maps form fields to their error messages.
    """

    status: int = 500
    party: Party = SERVER

    def __init__(
        self, message: str, *, status: int | None = None, fields: dict[str, list[str]] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.fields = fields


class RequestError(TriggerDjangoError):
    """The browser's request was refused (4xx); the message says what was wrong with it."""

    status = 400
    party: Party = REQUEST


class ConfigurationError(TriggerDjangoError, ImproperlyConfigured):
    """This site's configuration stops trigger_django from doing its job (a setting is missing or
    wrong). Also an ``ImproperlyConfigured``, as Django's own configuration errors are."""

    status = 503
    party: Party = CONFIGURATION


def describe(exc: BaseException) -> ErrorDescription:
    """The status, message and party at fault for ``exc`` (see the table in the module
    docstring). Never raises; never shows an unexpected exception's own text."""
    if isinstance(exc, TriggerDjangoError):
        message = exc.message
        if exc.party == CONFIGURATION:
            message += _CONFIGURATION_SUFFIX
        elif exc.party == UPSTREAM:
            message += _UPSTREAM_SUFFIX
        elif exc.party == SERVER:
            message = _BUG_MESSAGE
        return ErrorDescription(exc.status, message, exc.party)
    if isinstance(exc, TriggerError):
        return _describe_trigger_error(exc)
    if isinstance(exc, ImproperlyConfigured):
        return ErrorDescription(
            503,
            "trigger_django is not configured correctly (the details are in the server's log)."
            + _CONFIGURATION_SUFFIX,
            CONFIGURATION,
        )
    if isinstance(exc, PermissionDenied):
        return ErrorDescription(403, "You may not do this.", REQUEST)
    if isinstance(exc, Http404):
        return ErrorDescription(404, "Not found.", REQUEST)
    if isinstance(exc, RequestDataTooBig):
        return ErrorDescription(413, "The request is too large.", REQUEST)
    if isinstance(exc, SuspiciousOperation | ValidationError):
        return ErrorDescription(400, "The request could not be read or is not valid.", REQUEST)
    if isinstance(exc, asyncio.CancelledError) or not isinstance(exc, Exception):
        return ErrorDescription(503, _CANCELLED_MESSAGE, SERVER)
    return ErrorDescription(500, _BUG_MESSAGE, SERVER)


def _describe_trigger_error(exc: TriggerError) -> ErrorDescription:
    if isinstance(exc, APIStatusError):
        said = f" ({exc.message})" if exc.message else ""
        if isinstance(exc, AuthenticationError | PermissionDeniedError):
            return ErrorDescription(
                503,
                f"This server's Trigger.dev credentials are missing or were refused ({exc.status}"
                f"{': ' + exc.message if exc.message else ''}): check the Trigger.dev secret key "
                "(TRIGGER_SECRET_KEY); it may be wrong or for another project."
                + _CONFIGURATION_SUFFIX,
                CONFIGURATION,
            )
        if isinstance(exc, RunCompletedError):
            return ErrorDescription(
                400, "The run has already finished; it no longer accepts input.", REQUEST
            )
        if isinstance(exc, NotFoundError):
            return ErrorDescription(404, f"Trigger.dev has no such run or stream{said}.", REQUEST)
        if isinstance(exc, PayloadTooLargeError):
            return ErrorDescription(
                413, "Trigger.dev refused the input as too large (its limit is 1 MiB).", REQUEST
            )
        if isinstance(exc, BadRequestError | UnprocessableEntityError):
            return ErrorDescription(
                exc.status,
                f"Trigger.dev refused the request: {exc.message or 'it is not valid'}.",
                REQUEST,
            )
        return ErrorDescription(
            502, f"Trigger.dev answered {exc.status}{said}." + _UPSTREAM_SUFFIX, UPSTREAM
        )
    if isinstance(exc, UpstreamUnavailableError):
        busy = " (it kept answering 429: too many requests)" if exc.status == 429 else ""
        return ErrorDescription(
            503,
            f"Trigger.dev could not be reached{busy}." + _UPSTREAM_SUFFIX,
            UPSTREAM,
        )
    if isinstance(exc, InvalidTokenError):
        return ErrorDescription(400, f"The access token is not valid: {exc}.", REQUEST)
    return ErrorDescription(
        502, "Trigger.dev's answer could not be used." + _UPSTREAM_SUFFIX, UPSTREAM
    )


def log_failure(log: logging.Logger, exc: BaseException, description: ErrorDescription) -> None:
    """Log ``exc`` as its party deserves: a bug with its traceback, a configuration problem as
    an error, Trigger.dev's failures as warnings, refused requests at info.

    The traceback's frames are cleared first (:func:`traceback.clear_frames`), so no handler, no
    error tracker and no debug page can show their local variables, which may hold a minted
    token. The traceback itself (files, lines, code) is kept.

    Call it in the code that caught ``exc``, before awaiting anything else: on Python < 3.13,
    clearing the frame of a coroutine that is *suspended* (not finished, not running) closes
    that coroutine, and only a frame elsewhere could be in that state.
    """
    _clear_locals(exc)
    if description.party == SERVER:
        log.error("trigger_django: %s", type(exc).__name__, exc_info=exc)
    elif description.party == CONFIGURATION:
        log.error("trigger_django: %s: %s", type(exc).__name__, exc)
    elif description.party == UPSTREAM:
        log.warning("trigger_django: %s: %s", type(exc).__name__, exc)
    else:
        log.info("trigger_django: refused (%s): %s", description.status, description.message)


def _clear_locals(exc: BaseException) -> None:
    seen: set[int] = set()
    pending = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if current.__traceback__ is not None:
            traceback.clear_frames(current.__traceback__)
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
