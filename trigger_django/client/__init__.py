"""A Django-free async client for the Trigger.dev realtime API.

Reads output streams with the official SDK's resume and retry rules, sends to input streams,
triggers tasks and mints public access tokens. See ``docs/client.md``.
"""

from __future__ import annotations

from ._client import (
    SDK_VERSION,
    RunSubscription,
    StreamSubscription,
    TriggerClient,
    path_segment,
    retry_delay,
)
from ._errors import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    GoneError,
    InvalidTokenError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RunCompletedError,
    TriggerError,
    UnprocessableEntityError,
    UpstreamUnavailableError,
)
from ._models import RunHandle, StreamPart
from ._runs import (
    Run,
    RunError,
    RunEvent,
    RunShapeError,
    RunUpdate,
    StreamChunk,
    StreamEnded,
    api_status,
    parse_pg_array,
)
from ._sse import ServerSentEvent, SSEDecoder
from ._tokens import (
    decode_public_token,
    flatten_scopes,
    scope_allows,
    sign_public_token,
    verify_public_token,
)

__all__ = [
    "SDK_VERSION",
    "APIStatusError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "GoneError",
    "InvalidTokenError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "Run",
    "RunCompletedError",
    "RunError",
    "RunEvent",
    "RunHandle",
    "RunShapeError",
    "RunSubscription",
    "RunUpdate",
    "SSEDecoder",
    "ServerSentEvent",
    "StreamChunk",
    "StreamEnded",
    "StreamPart",
    "StreamSubscription",
    "TriggerClient",
    "TriggerError",
    "UnprocessableEntityError",
    "UpstreamUnavailableError",
    "api_status",
    "decode_public_token",
    "flatten_scopes",
    "parse_pg_array",
    "path_segment",
    "retry_delay",
    "scope_allows",
    "sign_public_token",
    "verify_public_token",
]
