"""The single-run Electric shape (``GET /realtime/v1/runs/{run}``), as the server's native feed
writes it (§5): every value a string or null, decoded by the client with ``electric-schema``."""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from trigger_django.emulator.state import Run, js_json

#: (column, type, dims, empty array as null) in the server's order.
RUN_COLUMNS: tuple[tuple[str, str, int, bool], ...] = (
    ("id", "text", 0, False),
    ("taskIdentifier", "text", 0, False),
    ("createdAt", "timestamp", 0, False),
    ("updatedAt", "timestamp", 0, False),
    ("startedAt", "timestamp", 0, False),
    ("delayUntil", "timestamp", 0, False),
    ("queuedAt", "timestamp", 0, False),
    ("expiredAt", "timestamp", 0, False),
    ("completedAt", "timestamp", 0, False),
    ("friendlyId", "text", 0, False),
    ("number", "int4", 0, False),
    ("isTest", "bool", 0, False),
    ("status", "text", 0, False),
    ("usageDurationMs", "int4", 0, False),
    ("costInCents", "float8", 0, False),
    ("baseCostInCents", "float8", 0, False),
    ("ttl", "text", 0, False),
    ("payload", "text", 0, False),
    ("payloadType", "text", 0, False),
    ("metadata", "text", 0, False),
    ("metadataType", "text", 0, False),
    ("output", "text", 0, False),
    ("outputType", "text", 0, False),
    ("runTags", "text", 1, True),
    ("error", "jsonb", 0, False),
    ("realtimeStreams", "text", 1, False),
)
RESERVED_COLUMNS = frozenset({"id", "taskIdentifier", "friendlyId", "status", "createdAt"})
#: How long a live request waits for a change before answering ``up-to-date``: the native
#: server holds it 20 s, jittered by ±15 % per request (``#jitteredTimeout``).
LIVE_HOLD_SECONDS = 20.0
LIVE_HOLD_JITTER = 0.15


def live_hold_seconds() -> float:
    return LIVE_HOLD_SECONDS * (1 - LIVE_HOLD_JITTER + random.random() * 2 * LIVE_HOLD_JITTER)


def _timestamp(ms: int | None) -> str | None:
    if ms is None:
        return None
    # ISO without the trailing "Z": the SDK appends it before parsing.
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]


def _pg_array(values: list[str], empty_as_null: bool) -> str | None:
    if not values:
        return None if empty_as_null else "{}"
    quoted = ('"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"' for value in values)
    return "{" + ",".join(quoted) + "}"


def _row(run: Run) -> dict[str, Any]:
    succeeded = run.status == "COMPLETED_SUCCESSFULLY"
    payload = run.raw_payload if isinstance(run.raw_payload, str) else js_json(run.raw_payload)
    return {
        "id": run.internal_id,
        "taskIdentifier": run.task_identifier,
        "createdAt": _timestamp(run.created_at),
        "updatedAt": _timestamp(run.updated_at),
        "startedAt": _timestamp(run.created_at),
        "delayUntil": None,
        "queuedAt": _timestamp(run.created_at),
        "expiredAt": None,
        "completedAt": _timestamp(run.completed_at),
        "friendlyId": run.id,
        "number": str(run.number),
        "isTest": "f",
        "status": run.status,
        "usageDurationMs": str((run.completed_at or run.updated_at) - run.created_at),
        "costInCents": "0",
        "baseCostInCents": "0",
        "ttl": None,
        "payload": None if run.raw_payload is None else payload,
        "payloadType": run.payload_type,
        "metadata": js_json(run.metadata) if run.metadata else None,
        "metadataType": "application/json",
        "output": js_json(run.output) if succeeded and run.output is not None else None,
        "outputType": "application/json",
        "runTags": _pg_array(run.tags, True),
        "error": js_json(run.error) if run.error is not None else None,
        "realtimeStreams": _pg_array(run.realtime_streams, False),
    }


def _kept(skip_columns: Iterable[str]) -> list[tuple[str, str, int, bool]]:
    skip = {column for column in skip_columns if column and column not in RESERVED_COLUMNS}
    return [column for column in RUN_COLUMNS if column[0] not in skip]


def schema_header(skip_columns: Iterable[str]) -> str:
    schema: dict[str, dict[str, Any]] = {}
    for name, kind, dims, _ in _kept(skip_columns):
        schema[name] = {"type": kind, "dims": dims} if dims else {"type": kind}
    return js_json(schema)


def change_message(run: Run, operation: str, skip_columns: Iterable[str]) -> dict[str, Any]:
    row = _row(run)
    return {
        "key": f'"public"."TaskRun"/"{run.internal_id}"',
        "value": {name: row[name] for name, _, _, _ in _kept(skip_columns)},
        "headers": {"operation": operation},
    }


UP_TO_DATE: dict[str, Any] = {"headers": {"control": "up-to-date"}}
MUST_REFETCH: dict[str, Any] = {"headers": {"control": "must-refetch"}}


def offset_for(run: Run) -> str:
    return f"{run.updated_at}_{run.revision}"


def revision_of(offset: str | None) -> int:
    """The run revision a client last saw, from the offset it echoes (``-1`` when none)."""
    if not offset or "_" not in offset:
        return -1
    try:
        return int(offset.rsplit("_", 1)[1])
    except ValueError:
        return -1
