"""Plain data returned by the client."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class StreamPart:
    """One part of a realtime output stream, as the official SDK's ``fetchStream`` sees it.

    ``id`` is the resume cursor: the record's ``seq_num`` as a string on v2 streams, the Redis
    entry id (``"<ms>-<seq>"``) on v1. ``chunk`` is the parsed JSON value the task wrote (or the
    raw string when it is not JSON). ``timestamp`` is in milliseconds since the epoch.
    ``record_id`` (the producer's dedupe id) and ``headers`` exist only on v2 streams.
    """

    id: str
    chunk: Any
    timestamp: int
    record_id: str | None = None
    headers: tuple[tuple[str, str], ...] = field(default=())


@dataclass(frozen=True, slots=True)
class RunHandle:
    """A triggered run: its friendly id and a public access token that can read it."""

    id: str
    public_access_token: str
    is_cached: bool = False
