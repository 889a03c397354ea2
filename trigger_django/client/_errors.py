"""The client's exception hierarchy.

Every error raised by :mod:`trigger_django.client` derives from :class:`TriggerError`. Errors the
Trigger.dev API answered with a status carry it, plus the server's message, on
:class:`APIStatusError`; the subclasses let callers catch one case (``except NotFoundError``).
"""

from __future__ import annotations


class TriggerError(Exception):
    """Base class of every error raised by the Trigger.dev client."""


class APIStatusError(TriggerError):
    """The API answered with a non-success status that will not be retried.

    ``status`` is the HTTP status; ``message`` is the server's own message (the JSON ``error``
    field, or the plain-text body), or an empty string when it sent none.
    """

    def __init__(self, status: int, message: str, *, context: str = "") -> None:
        self.status = status
        self.message = message
        self.context = context
        text = f"{status} {context}" if context else str(status)
        if message:
            text = f"{text}: {message}"
        super().__init__(text)


class BadRequestError(APIStatusError):
    """400: the request was invalid."""


class RunCompletedError(BadRequestError):
    """400: the run has already finished, so it no longer accepts input."""


class AuthenticationError(APIStatusError):
    """401: the secret key or access token is missing, invalid or expired."""


class PermissionDeniedError(APIStatusError):
    """403: the token is valid but its scopes do not cover this run or stream."""


class NotFoundError(APIStatusError):
    """404: no such run, task or stream (in the key's environment)."""


class ConflictError(APIStatusError):
    """409."""


class GoneError(APIStatusError):
    """410."""


class PayloadTooLargeError(APIStatusError):
    """413: the request body is over the server's limit."""


class UnprocessableEntityError(APIStatusError):
    """422: the server understood the request but refused it (e.g. validation failed)."""


class UpstreamUnavailableError(TriggerError):
    """The API could not be reached, or kept answering 5xx/429, and the call gave up.

    ``status`` is the last HTTP status seen, or ``None`` after a network error.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class InvalidTokenError(TriggerError):
    """A public access token failed verification (signature, issuer, audience, expiry...)."""


_STATUS_ERRORS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    410: GoneError,
    413: PayloadTooLargeError,
    422: UnprocessableEntityError,
}


def error_for_status(status: int, message: str, *, context: str = "") -> APIStatusError:
    """The :class:`APIStatusError` subclass for ``status`` (the base class for other statuses)."""
    return _STATUS_ERRORS.get(status, APIStatusError)(status, message, context=context)
