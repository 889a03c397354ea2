"""Run subscriptions: the Electric shape protocol as ``@trigger.dev/core`` 4.8.3 speaks it.

``ApiClient.subscribeToRun`` opens an Electric ``ShapeStream`` (``@electric-sql/client`` 1.0.14)
on ``GET /realtime/v1/runs/{runId}``, folds the change messages into rows
(``ReadableShapeStream`` in ``apiClient/stream.js``), validates each row
(``SubscribeRunRawShape``) and turns it into the SDK's run object
(``RunSubscription.transformRunShape`` in ``apiClient/runStream.js``). This module does the
same steps; see ``docs/client.md`` and ``trigger-protocol.md`` §5.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from ._errors import TriggerError
from ._models import StreamPart

#: Headers the SDK's ``zodShapeStream`` adds to the realtime set.
ELECTRIC_VERSION: Final = "1.0.0-beta.1"
#: Electric's ``BackoffDefaults``: 100 ms, times 1.3 per retry, at most 10 s, no jitter.
SHAPE_BACKOFF_INITIAL: Final = 0.1
SHAPE_BACKOFF_MULTIPLIER: Final = 1.3
SHAPE_BACKOFF_MAX: Final = 10.0


class RunShapeError(TriggerError):
    """The run shape could not be read: a response without the Electric headers, a body that is
    not a JSON array of messages, or a row the SDK's schema would refuse."""


@dataclass(frozen=True, slots=True)
class RunError:
    """A failed run's error, as the SDK's ``createJsonErrorObject`` gives it."""

    message: str
    name: str | None = None
    stack_trace: str | None = None
    causes: tuple[Any, ...] | None = None


@dataclass(frozen=True, slots=True)
class Run:
    """One state of a run, with the SDK run object's fields in snake_case.

    Timestamps are aware UTC datetimes; ``status`` is the SDK's status string (``QUEUED``,
    ``EXECUTING``, ``WAITING``, ``COMPLETED``, ``FAILED``, ``CANCELED``, ...). ``payload`` and
    ``output`` are decoded by their packet type; ``None`` when absent (the SDK's
    ``undefined``), as are the optional timestamps, ``idempotency_key``, ``error`` and
    ``metadata``.
    """

    id: str
    created_at: datetime
    updated_at: datetime
    task_identifier: str
    status: str
    payload: Any = None
    output: Any = None
    duration_ms: float = 0
    cost_in_cents: float = 0
    base_cost_in_cents: float = 0
    tags: tuple[str, ...] = ()
    idempotency_key: str | None = None
    expired_at: datetime | None = None
    finished_at: datetime | None = None
    started_at: datetime | None = None
    delayed_until: datetime | None = None
    queued_at: datetime | None = None
    error: RunError | None = None
    is_test: bool = False
    metadata: Any = None
    realtime_streams: tuple[str, ...] = ()
    is_queued: bool = False
    is_waiting: bool = False
    is_executing: bool = False
    is_completed: bool = False
    is_failed: bool = False
    is_success: bool = False
    is_cancelled: bool = False

    def stream_keys(self) -> tuple[str, ...]:
        """The run's stream keys as ``withStreams()`` finds them: ``metadata["$$streams"]``
        when that is a non-empty list of strings (the v3 way), else ``realtime_streams``."""
        legacy = self.metadata.get("$$streams") if isinstance(self.metadata, dict) else None
        if isinstance(legacy, list) and legacy and all(isinstance(k, str) for k in legacy):
            return tuple(legacy)
        return self.realtime_streams


@dataclass(frozen=True, slots=True)
class RunUpdate:
    """``subscribe_run_with_streams``: a new state of the run."""

    run: Run
    type: str = field(default="run", init=False)


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """``subscribe_run_with_streams``: one part of the run's stream ``stream``; ``run`` is the
    run state that made the stream known (as the SDK's ``{type: key, chunk, run}``)."""

    stream: str
    part: StreamPart
    run: Run
    type: str = field(default="stream", init=False)

    @property
    def chunk(self) -> Any:
        return self.part.chunk


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """``subscribe_run_with_streams``: the read of stream ``stream`` ended, cleanly (``error``
    is ``None``: the server closed it idle, or the run finished and it was drained) or with a
    terminal error."""

    stream: str
    error: TriggerError | None = None
    type: str = field(default="stream_ended", init=False)


#: What ``subscribe_run_with_streams`` yields.
RunEvent = RunUpdate | StreamChunk | StreamEnded


# -- Electric value decoding ([electric] parser.ts) -------------------------------------------


_DECIMAL: Final = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INTEGER: Final = re.compile(r"[+-]?[0-9]+")
_PREFIXED: Final = re.compile(r"0(?:[xX][0-9a-fA-F]+|[oO][0-7]+|[bB][01]+)")


def _js_number(value: str) -> float:
    """``Number(value)``: integers stay ``int``; what JavaScript cannot read is NaN."""
    text = value.strip(" \t\n\r\v\f")
    if not text:
        return 0
    if _INTEGER.fullmatch(text) and len(text) <= 4000:
        return int(text)
    if _DECIMAL.fullmatch(text):
        return float(text)
    if _PREFIXED.fullmatch(text):
        return int(text, 0)
    if text in ("Infinity", "+Infinity"):
        return math.inf
    if text == "-Infinity":
        return -math.inf
    return math.nan


def _parse_json(value: str) -> Any:
    try:
        return json.loads(value)
    except (ValueError, RecursionError) as exc:
        raise RunShapeError(f"Unable to parse shape: a JSON column is not JSON ({exc})") from None


def _scalar(kind: str, value: str) -> Any:
    if kind in ("int2", "int4", "float4", "float8"):
        return _js_number(value)
    if kind == "int8":
        try:
            return int(value.strip() or "0", 0)
        except ValueError:
            raise RunShapeError(f"Unable to parse shape: {value!r} is not an int8") from None
    if kind == "bool":
        return value in ("true", "t")
    if kind in ("json", "jsonb"):
        return _parse_json(value)
    return value


def parse_pg_array(value: str, kind: str = "text") -> Any:
    """A Postgres array literal (``{"a","b"}``, ``{a,NULL}``, nested) as a list, each element
    decoded as ``kind``; the quoting rules of Electric's ``pgArrayParser``."""
    position = 0

    def element(raw: str) -> Any:
        return _scalar(kind, raw)

    def parse_list() -> list[Any]:
        nonlocal position
        items: list[Any] = []
        position += 1  # the "{"
        token: str | None = None
        while position < len(value):
            char = value[position]
            if char == "{":
                items.append(parse_list())
                token = None
                continue
            if char == '"':
                position += 1
                text = []
                while position < len(value) and value[position] != '"':
                    if value[position] == "\\" and position + 1 < len(value):
                        position += 1
                    text.append(value[position])
                    position += 1
                position += 1  # the closing quote
                items.append(element("".join(text)))
                token = None
                continue
            if char in ",}":
                if token is not None:
                    items.append(None if token == "NULL" else element(token))
                token = None
                position += 1
                if char == "}":
                    return items
                continue
            token = (token or "") + char
            position += 1
        if token is not None:
            items.append(None if token == "NULL" else element(token))
        return items

    if not value.startswith("{"):
        raise RunShapeError(f"Unable to parse shape: {value[:40]!r} is not a Postgres array")
    return parse_list()


def decode_row(row: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """Each column decoded by its ``electric-schema`` type (columns without one stay as sent)."""
    decoded: dict[str, Any] = {}
    for name, value in row.items():
        info = schema.get(name)
        if value is None or not isinstance(info, dict) or not isinstance(value, str):
            decoded[name] = value
            continue
        kind = str(info.get("type", "text"))
        dims = info.get("dims")
        if isinstance(dims, int) and dims > 0:
            decoded[name] = parse_pg_array(value, kind)
        else:
            decoded[name] = _scalar(kind, value)
    return decoded


# -- the SDK's row validation and run object ---------------------------------------------------

_STATUS: Final = {
    "DELAYED": "DELAYED",
    "WAITING_FOR_DEPLOY": "PENDING_VERSION",
    "PENDING_VERSION": "PENDING_VERSION",
    "PENDING": "QUEUED",
    "PAUSED": "WAITING",
    "WAITING_TO_RESUME": "WAITING",
    "DEQUEUED": "DEQUEUED",
    "RETRYING_AFTER_FAILURE": "EXECUTING",
    "EXECUTING": "EXECUTING",
    "CANCELED": "CANCELED",
    "COMPLETED_SUCCESSFULLY": "COMPLETED",
    "SYSTEM_FAILURE": "SYSTEM_FAILURE",
    "CRASHED": "CRASHED",
    "INTERRUPTED": "FAILED",
    "COMPLETED_WITH_ERRORS": "FAILED",
    "EXPIRED": "EXPIRED",
    "TIMED_OUT": "TIMED_OUT",
}
_QUEUED: Final = frozenset({"PENDING_VERSION", "QUEUED", "PENDING", "DELAYED"})
_EXECUTING: Final = frozenset({"DEQUEUED", "EXECUTING"})
_FAILED: Final = frozenset({"FAILED", "CRASHED", "SYSTEM_FAILURE", "EXPIRED", "TIMED_OUT"})


def api_status(db_status: str) -> str:
    """The SDK's ``apiStatusFromRunStatus``: unknown statuses read as ``QUEUED``."""
    return _STATUS.get(db_status, "QUEUED")


def _bad(column: str, expected: str, value: Any) -> RunShapeError:
    return RunShapeError(
        f"Unable to parse shape: column {column!r} should be {expected}, not {value!r}"[:300]
    )


def _shape_date(column: str, value: Any, *, optional: bool) -> datetime | None:
    # RawShapeDate: `${value}Z` through Date; optional ones keep a falsy value as it is.
    if optional and (value is None or value == ""):
        return None
    if not isinstance(value, str):
        raise _bad(column, "a timestamp string", value)
    try:
        parsed = datetime.fromisoformat(value + "Z")
    except ValueError:
        raise _bad(column, "a timestamp without a zone", value) from None
    return parsed.astimezone(UTC)


def _number(row: Mapping[str, Any], column: str) -> float:
    value = row.get(column)
    if value is None:
        return 0  # z.number().default(0), then `?? 0`
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise _bad(column, "a number", value)
    return value


def _optional_str(row: Mapping[str, Any], column: str) -> str | None:
    value = row.get(column)
    if value is None or isinstance(value, str):
        return value
    raise _bad(column, "a string or null", value)


def _str_list(row: Mapping[str, Any], column: str) -> tuple[str, ...]:
    value = row.get(column)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _bad(column, "an array of strings", value)
    return tuple(value)


def run_error(error: Any) -> RunError:
    """``createJsonErrorObject`` of a ``TaskRunError`` (the four error types)."""
    if not isinstance(error, dict):
        raise _bad("error", "a task run error object", error)
    kind = error.get("type")
    if kind == "BUILT_IN_ERROR":
        name, message, stack = error.get("name"), error.get("message"), error.get("stackTrace")
        if not (isinstance(name, str) and isinstance(message, str) and isinstance(stack, str)):
            raise _bad("error", "a BUILT_IN_ERROR with name, message and stackTrace", error)
        causes = error.get("causes")
        return RunError(
            message,
            name=name,
            stack_trace=stack,
            causes=tuple(causes) if isinstance(causes, list) and causes else None,
        )
    if kind in ("STRING_ERROR", "CUSTOM_ERROR"):
        raw = error.get("raw")
        if not isinstance(raw, str):
            raise _bad("error", f"a {kind} with a raw string", error)
        return RunError(raw)
    if kind == "INTERNAL_ERROR":
        code = error.get("code")
        if not isinstance(code, str):
            raise _bad("error", "an INTERNAL_ERROR with a code", error)
        return RunError(f"trigger.dev internal error ({code})")
    raise _bad("error", "a task run error object", error)


def validate_row(row: Mapping[str, Any]) -> None:
    """The checks of the SDK's ``SubscribeRunRawShape`` that could refuse a decoded row."""
    for column in ("id", "taskIdentifier", "friendlyId", "status"):
        if not isinstance(row.get(column), str):
            raise _bad(column, "a string", row.get(column))
    for column in ("number", "usageDurationMs", "costInCents", "baseCostInCents"):
        _number(row, column)
    if row.get("isTest") is not None and not isinstance(row.get("isTest"), bool):
        raise _bad("isTest", "a boolean", row.get("isTest"))
    for column in (
        "idempotencyKey",
        "ttl",
        "payload",
        "payloadType",
        "metadata",
        "metadataType",
        "output",
        "outputType",
    ):
        _optional_str(row, column)
    _str_list(row, "runTags")
    _str_list(row, "realtimeStreams")


def parse_packet(data: str | None, data_type: str | None) -> Any:
    """The SDK's ``parsePacket``: JSON, superjson, plain text; other types as the raw string."""
    if not data:
        return None
    if data_type == "application/json":
        return _parse_json(data)
    if data_type == "application/super+json":
        return superjson_parse(data)
    return data


def superjson_parse(data: str) -> Any:
    """``superjson.parse`` for what a task writes: ``{"json": ..., "meta": {"values": ...}}``
    with ``Date``, ``undefined``, ``bigint``, ``set`` and ``map`` annotations."""
    document = _parse_json(data)
    if not isinstance(document, dict) or "json" not in document:
        return document
    value = document["json"]
    meta = document.get("meta")
    annotations = meta.get("values") if isinstance(meta, dict) else None
    if annotations is None:
        return value
    if not isinstance(annotations, dict | list):
        return value
    if isinstance(annotations, list):  # the root itself is annotated
        return _superjson_apply(value, annotations)
    for path, annotation in annotations.items():
        value = _superjson_at(value, path.split("."), annotation)
    return value


def _superjson_at(value: Any, path: list[str], annotation: Any) -> Any:
    if not path:
        return _superjson_apply(value, annotation)
    head, rest = path[0], path[1:]
    if isinstance(value, dict) and head in value:
        value[head] = _superjson_at(value[head], rest, annotation)
    elif isinstance(value, list) and head.isdigit() and int(head) < len(value):
        value[int(head)] = _superjson_at(value[int(head)], rest, annotation)
    return value


def _superjson_apply(value: Any, annotation: Any) -> Any:
    kind = annotation[0] if isinstance(annotation, list) and annotation else annotation
    if kind == "Date" and isinstance(value, str):
        try:
            return datetime.fromisoformat(value).astimezone(UTC)
        except ValueError:
            return value
    if kind == "undefined":
        return None
    if kind == "bigint" and isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return value
    if kind == "set" and isinstance(value, list):
        return value
    if kind == "map" and isinstance(value, list):
        try:
            return dict(value)
        except (TypeError, ValueError):
            return value
    return value


def run_from_row(row: Mapping[str, Any], payload: Any, output: Any) -> Run:
    """``transformRunShape``, with ``payload`` and ``output`` already decoded."""
    validate_row(row)
    status = api_status(row["status"])
    metadata_text, metadata_type = row.get("metadata"), row.get("metadataType")
    metadata = (
        parse_packet(metadata_text, metadata_type) if metadata_text and metadata_type else None
    )
    error = row.get("error")
    return Run(
        id=row["friendlyId"],
        created_at=_required_date(row, "createdAt"),
        updated_at=_required_date(row, "updatedAt"),
        task_identifier=row["taskIdentifier"],
        status=status,
        payload=payload,
        output=output,
        duration_ms=_number(row, "usageDurationMs"),
        cost_in_cents=_number(row, "costInCents"),
        base_cost_in_cents=_number(row, "baseCostInCents"),
        tags=_str_list(row, "runTags"),
        idempotency_key=_optional_str(row, "idempotencyKey"),
        expired_at=_shape_date("expiredAt", row.get("expiredAt"), optional=True),
        finished_at=_shape_date("completedAt", row.get("completedAt"), optional=True),
        started_at=_shape_date("startedAt", row.get("startedAt"), optional=True),
        delayed_until=_shape_date("delayUntil", row.get("delayUntil"), optional=True),
        queued_at=_shape_date("queuedAt", row.get("queuedAt"), optional=True),
        error=run_error(error) if error else None,
        is_test=bool(row.get("isTest") or False),
        metadata=metadata,
        realtime_streams=_str_list(row, "realtimeStreams"),
        is_queued=status in _QUEUED,
        is_waiting=status == "WAITING",
        is_executing=status in _EXECUTING,
        is_completed=status == "COMPLETED" or status in _FAILED,
        is_failed=status in _FAILED,
        is_success=status == "COMPLETED",
        is_cancelled=status == "CANCELED",
    )


def _required_date(row: Mapping[str, Any], column: str) -> datetime:
    value = _shape_date(column, row.get(column), optional=False)
    assert value is not None
    return value
