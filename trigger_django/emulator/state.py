"""In-memory state of the emulator: runs, their streams, injected faults and the request log.

Everything lives in one process and one event loop. Readers wait on futures that the writers
resolve, so a part is delivered as soon as it is stored (no polling).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import traceback
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

StreamVersion = Literal["v1", "v2"]
FaultKind = Literal["drop", "status", "stall", "malformed", "must-refetch"]

FAULT_KINDS: tuple[str, ...] = ("drop", "status", "stall", "malformed", "must-refetch")
#: The fault key of a run's Electric shape (``GET /realtime/v1/runs/{run}``), as opposed to a
#: stream name. Shape faults: ``must-refetch`` and ``status``.
RUN_SHAPE_KEY = "$shape"
SHAPE_FAULT_KINDS: tuple[str, ...] = ("must-refetch", "status")
#: Statuses a run can be put in while it is not finished (the DB statuses of §5.4).
OPEN_STATUSES = frozenset(
    {
        "PENDING",
        "PENDING_VERSION",
        "WAITING_FOR_DEPLOY",
        "DELAYED",
        "DEQUEUED",
        "EXECUTING",
        "RETRYING_AFTER_FAILURE",
        "PAUSED",
        "WAITING_TO_RESUME",
    }
)
MALFORMED_VARIANTS: tuple[str, ...] = ("all", "garbage", "invalid_json", "non_json_body")
FINISHED_STATUSES = frozenset(
    {
        "COMPLETED_SUCCESSFULLY",
        "COMPLETED_WITH_ERRORS",
        "CANCELED",
        "SYSTEM_FAILURE",
        "CRASHED",
        "INTERRUPTED",
        "EXPIRED",
        "TIMED_OUT",
    }
)
INPUT_STREAM_PREFIX = "$trigger.input:"
REQUEST_LOG_LIMIT = 100_000
#: S2's metered size of a record: 8 bytes, plus 2 per header, plus the header names and values,
#: plus the body (``s2_common::record`` ``EnvelopeRecord::metered_size``). Emulated records
#: carry no headers.
RECORD_OVERHEAD_BYTES = 8
#: S2's per-record and per-batch limits (``s2_common::caps::RECORD_BATCH_MAX``).
RECORD_MAX_METERED_BYTES = 1024 * 1024
BATCH_MAX_RECORDS = 1000
BATCH_MAX_METERED_BYTES = 1024 * 1024


_JS_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def js_json(value: Any) -> str:
    """``JSON.stringify`` as Node writes it: compact separators, non-ASCII kept as is."""
    return _JS_ENCODER.encode(value)


def nanoid(size: int = 7) -> str:
    """A random id over nanoid's URL-safe alphabet (what the SDK uses for record ids)."""
    # token_urlsafe is base64url, nanoid's alphabet; one call is much faster than per-char choice.
    return secrets.token_urlsafe(size)[:size]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def task_run_error(error: Any) -> Any:
    """The error as a ``TaskRunError`` (the shape the SDK validates run errors against)."""
    if isinstance(error, BaseException):
        return {
            "type": "BUILT_IN_ERROR",
            "name": type(error).__name__,
            "message": str(error),
            "stackTrace": "".join(traceback.format_exception(error)),
        }
    if isinstance(error, str):
        return {"type": "STRING_ERROR", "raw": error}
    if isinstance(error, dict) and "type" in error:
        return error
    return {"type": "CUSTOM_ERROR", "raw": js_json(error)}


class RecordTooLargeError(ValueError):
    """A v2 record whose S2 metered size would pass 1 MiB; S2 refuses it, so nothing is stored.

    ``message`` is the wording of the real server's append route (413);
    ``s2_message`` is S2's own (what a direct S2 append gets, 422).
    """

    def __init__(self, metered_bytes: int) -> None:
        self.metered_bytes = metered_bytes
        self.message = (
            f"Record metered size {metered_bytes} bytes exceeds the S2 per-record limit of "
            f"{RECORD_MAX_METERED_BYTES} bytes. Reduce tool-output size or split into smaller "
            "parts."
        )
        self.s2_message = "record must have metered size less than 1 MiB"
        super().__init__(self.message)


@dataclass(slots=True)
class EmulatorConfig:
    secret_key: str
    stream_version: StreamVersion = "v1"
    idle_timeout: float = 60.0
    ping_interval: float = 10.0
    tokens_per_second: float = 40.0
    env_id: str = "env_emulator_dev"


@dataclass(slots=True)
class Record:
    """One stored stream entry.

    For a v1 run ``text`` is the raw text of one Redis-like entry (NDJSON, possibly several or
    partial lines); for a v2 run it is the S2 record body, the envelope ``{"data":…,"id":…}``.
    """

    seq: int
    timestamp: int
    entry_key: tuple[int, int]
    text: str
    client_id: str = ""
    chunk_index: int = 0
    #: S2's metered size of this record (v2 runs): 8 plus the UTF-8 body length.
    metered: int = 0
    _v2_fragment: str | None = None

    @property
    def entry_id(self) -> str:
        return f"{self.entry_key[0]}-{self.entry_key[1]}"

    def v2_fragment(self) -> str:
        # Cached: a 10,000-part stream read by several readers serialises each record once.
        if self._v2_fragment is None:
            self._v2_fragment = (
                f'{{"seq_num":{self.seq},"timestamp":{self.timestamp},"body":'
                f"{json.dumps(self.text, ensure_ascii=False)}}}"
            )
        return self._v2_fragment


class Stream:
    """An append-only list of records with wake-ups for waiting readers."""

    def __init__(self, run_id: str, name: str, version: StreamVersion) -> None:
        self.run_id = run_id
        self.name = name
        self.version = version
        self.records: list[Record] = []
        self.last_chunk_index: dict[str, int] = {}
        # v2 runs: the unfinished last line of each ingest writer, by client id.
        self.pending_lines: dict[str, str] = {}
        self._waiters: set[asyncio.Future[None]] = set()
        self._last_key: tuple[int, int] = (0, 0)

    def __len__(self) -> int:
        return len(self.records)

    def _next_entry_key(self, ms: int) -> tuple[int, int]:
        last_ms, last_n = self._last_key
        key = (last_ms, last_n + 1) if ms <= last_ms else (ms, 0)
        self._last_key = key
        return key

    def append_text(self, text: str, *, client_id: str = "", chunk_index: int = 0) -> Record:
        """Store ``text`` verbatim as one entry (v1 raw NDJSON or a v2 record body).

        On a v2 run a body whose metered size would pass 1 MiB raises
        :class:`RecordTooLargeError` and stores nothing, as S2 refuses it.
        """
        metered = RECORD_OVERHEAD_BYTES + len(text.encode())
        if self.version == "v2" and metered > RECORD_MAX_METERED_BYTES:
            raise RecordTooLargeError(metered)
        ms = now_ms()
        record = Record(
            seq=len(self.records),
            timestamp=ms,
            entry_key=self._next_entry_key(ms),
            text=text,
            client_id=client_id,
            chunk_index=chunk_index,
            metered=metered,
        )
        self.records.append(record)
        if client_id:
            self.last_chunk_index[client_id] = chunk_index
        self._notify()
        return record

    def append_part(self, part: Any, part_id: str | None = None) -> Record:
        """Store one part the way the run's backend would (§2.7d)."""
        if self.version == "v1":
            return self.append_text(js_json(part) + "\n")
        return self.append_text(js_json({"data": part, "id": part_id or nanoid()}))

    def append_json_line(self, line: str, *, client_id: str = "", chunk_index: int = 0) -> Record:
        """Store one NDJSON line written by the v1 ingest as a v2 record."""
        stripped = line.strip()
        try:
            json.loads(stripped)
        except ValueError:
            data_text = js_json(line)
        else:
            data_text = stripped
        body = '{"data":' + data_text + ',"id":"' + nanoid() + '"}'
        return self.append_text(body, client_id=client_id, chunk_index=chunk_index)

    def ingest(self, text: str, *, client_id: str, chunk_index: int) -> None:
        """Store one body read of the v1 ingest POST (§2.7b)."""
        if self.version == "v1":
            # One Redis entry per body read; lines are split when read.
            self.append_text(text, client_id=client_id, chunk_index=chunk_index)
            return
        # v2: one record per line. Lines split across body reads (or across POSTs of one
        # writer) are re-joined, as the v1 reader does.
        lines = (self.pending_lines.pop(client_id, "") + text).split("\n")
        for line in lines[:-1]:
            if line.strip():
                self.append_json_line(line, client_id=client_id, chunk_index=chunk_index)
        self.last_chunk_index[client_id] = chunk_index
        if lines[-1]:
            pending = RECORD_OVERHEAD_BYTES + len(lines[-1].encode())
            if pending > RECORD_MAX_METERED_BYTES:
                # Its record could never be stored: refuse now instead of buffering more.
                raise RecordTooLargeError(pending)
            self.pending_lines[client_id] = lines[-1]

    def v1_start(self, last_event_id: str | None) -> int:
        """Index of the first entry strictly after a Redis stream id (``"2"`` means ``2-0``)."""
        if not last_event_id:
            return 0
        key = parse_redis_id(last_event_id)
        return bisect_right(self.records, key, key=lambda record: record.entry_key)

    def part_count(self) -> int:
        if self.version == "v2":
            return len(self.records)
        joined = "".join(record.text for record in self.records)
        return sum(1 for line in joined.split("\n") if line.strip())

    def changed(self) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(future)
        future.add_done_callback(self._waiters.discard)
        return future

    def _notify(self) -> None:
        for waiter in list(self._waiters):
            if not waiter.done():
                waiter.set_result(None)


def parse_redis_id(value: str) -> tuple[int, int]:
    """Read a Redis stream id; a bare number ``n`` is ``n-0``, garbage is ``0-0``."""
    ms_text, _, seq_text = value.strip().partition("-")
    try:
        ms = int(ms_text)
    except ValueError:
        return (0, 0)
    try:
        seq = int(seq_text) if seq_text else 0
    except ValueError:
        seq = 0
    return (ms, seq)


def parse_v2_last_event_id(value: str | None) -> int:
    """S2 start ``seq_num``: the digits before any ``-``, plus one; ``0`` when absent."""
    if not value:
        return 0
    head = value.split("-", 1)[0].strip()
    digits = ""
    for char in head:
        if not char.isdigit():
            break
        digits += char
    return int(digits) + 1 if digits else 0


@dataclass(slots=True)
class InputReceived:
    stream_id: str
    data: Any
    record_id: str
    timestamp: int


@dataclass
class Run:
    id: str
    task_identifier: str
    payload: Any
    payload_type: str
    raw_payload: Any
    stream_version: StreamVersion
    tags: list[str] = field(default_factory=list)
    idempotency_key: str | None = None
    status: str = "EXECUTING"
    realtime_streams: list[str] = field(default_factory=list)
    streams: dict[str, Stream] = field(default_factory=dict)
    inputs: list[InputReceived] = field(default_factory=list)
    input_cursors: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    output: Any = None
    error: Any = None
    created_at: int = field(default_factory=now_ms)
    internal_id: str = field(default_factory=lambda: "cm" + secrets.token_hex(12))
    number: int = 0
    updated_at: int = field(default_factory=now_ms)
    #: Bumped on every change a run subscription shows (status, metadata, tags, streams,
    #: output, error, completion).
    revision: int = 0
    completed_at: int | None = None
    #: Bumped by a ``must-refetch`` fault: the shape gets a new handle.
    shape_generation: int = 0
    task: asyncio.Task[None] | None = None
    _watchers: set[asyncio.Future[None]] = field(default_factory=set)

    @property
    def shape_handle(self) -> str:
        """The Electric handle of this run's shape (the native server's ``run-<id>``)."""
        base = f"run-{self.internal_id}"
        return base if self.shape_generation == 0 else f"{base}-{self.shape_generation}"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    def stream(self, name: str) -> Stream:
        """The stream called ``name``, created on first use (S2's create-on-read)."""
        existing = self.streams.get(name)
        if existing is None:
            existing = self.streams[name] = Stream(self.id, name, self.stream_version)
        return existing

    def add_realtime_stream(self, key: str) -> None:
        if key not in self.realtime_streams:
            self.realtime_streams.append(key)
            self.touch()

    def set_metadata(self, values: dict[str, Any]) -> None:
        self.metadata.update(values)
        self.touch()

    def replace_metadata(self, metadata: dict[str, Any]) -> None:
        self.metadata = metadata
        self.touch()

    def set_status(self, status: str) -> None:
        """Move an unfinished run to another unfinished status (use ``finish`` to end it)."""
        if status not in OPEN_STATUSES:
            raise ValueError(
                f"Unknown or final run status {status!r}; expected one of "
                f"{sorted(OPEN_STATUSES)} (finish a run with complete or fail)."
            )
        if self.is_finished or self.status == status:
            return
        self.status = status
        self.touch()

    def add_tags(self, tags: list[str]) -> None:
        new = [tag for tag in tags if tag not in self.tags]
        if new:
            self.tags.extend(new)
            self.touch()

    def touch(self) -> None:
        """Record a change and wake run subscriptions."""
        self.revision += 1
        self.updated_at = max(now_ms(), self.updated_at)
        self.wake_shapes()

    def wake_shapes(self) -> None:
        """Wake parked live shape requests (a change, or a shape fault to answer)."""
        for watcher in list(self._watchers):
            if not watcher.done():
                watcher.set_result(None)

    def changed(self) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._watchers.add(future)
        future.add_done_callback(self._watchers.discard)
        return future

    def finish(self, status: str, *, output: Any = None, error: Any = None) -> bool:
        """Mark the run finished; returns ``False`` when it already was."""
        if self.is_finished:
            return False
        self.status = status
        self.output = output
        self.error = error
        self.completed_at = now_ms()
        self.touch()
        return True

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "taskIdentifier": self.task_identifier,
            "payload": self.payload,
            "payloadType": self.payload_type,
            "streamVersion": self.stream_version,
            "tags": self.tags,
            "idempotencyKey": self.idempotency_key,
            "realtimeStreams": list(self.realtime_streams),
            "streams": {
                name: stream.part_count()
                for name, stream in self.streams.items()
                if not name.startswith(INPUT_STREAM_PREFIX)
            },
            "inputStreams": {
                name.removeprefix(INPUT_STREAM_PREFIX): len(stream)
                for name, stream in self.streams.items()
                if name.startswith(INPUT_STREAM_PREFIX)
            },
            "inputs": [
                {"streamId": item.stream_id, "data": item.data, "id": item.record_id}
                for item in self.inputs
            ],
            "metadata": self.metadata,
            "output": self.output,
            "error": self.error,
            "number": self.number,
            "revision": self.revision,
            "shapeHandle": self.shape_handle,
            "createdAt": self.created_at,
            "completedAt": self.completed_at,
        }


@dataclass(slots=True)
class Fault:
    kind: FaultKind
    times: int = 1
    after: int = 0
    status: int = 503
    seconds: float = 5.0
    variant: str = "all"
    body: Any = None


@dataclass(slots=True)
class LoggedRequest:
    index: int
    method: str
    path: str
    query: str
    headers: dict[str, str]
    auth: str
    jwt_scopes: list[str] | None
    status: int | None = None
    #: True while the request is being served (a stream read stays open until it ends).
    open: bool = True
    #: The client's TCP port: which of its connections carried the request.
    peer_port: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "auth": self.auth,
            "jwt_scopes": self.jwt_scopes,
            "status": self.status,
            "open": self.open,
            "peer_port": self.peer_port,
        }


class EmulatorState:
    """All mutable state of one emulator; also its Python control API."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.runs: dict[str, Run] = {}
        self.idempotency: dict[tuple[str, str], str] = {}
        self.used_one_time_tokens: set[str] = set()
        self.faults: dict[tuple[str, str], list[Fault]] = {}
        # Bounded, so a long benchmark cannot grow it without limit.
        self.requests: deque[LoggedRequest] = deque(maxlen=REQUEST_LOG_LIMIT)
        self._request_index = 0
        self.shape_cursor = 0
        self.closing = asyncio.Event()

    # -- runs -------------------------------------------------------------------------------

    def new_run_id(self) -> str:
        while True:
            run_id = "run_" + "".join(
                secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(25)
            )
            if run_id not in self.runs:
                return run_id

    def complete_run(self, run_id: str, output: Any = None) -> Run:
        run = self.runs[run_id]
        run.finish("COMPLETED_SUCCESSFULLY", output=output)
        if run.task is not None and not run.task.done():
            run.task.cancel()
        return run

    def fail_run(self, run_id: str, error: Any) -> Run:
        """Mark the run ``COMPLETED_WITH_ERRORS`` with ``error`` (a ``TaskRunError`` object, or
        any value, wrapped as the SDK's error shapes), cancelling its simulated task."""
        run = self.runs[run_id]
        run.finish("COMPLETED_WITH_ERRORS", error=task_run_error(error))
        if run.task is not None and not run.task.done():
            run.task.cancel()
        return run

    def update_run(
        self,
        run_id: str,
        *,
        status: Any = None,
        metadata: Any = None,
        tags: Any = None,
    ) -> Run:
        """Change an unfinished run as a task would: its status, metadata (merged), tags (added);
        each change is one update of the run shape."""
        run = self.runs[run_id]
        if status is not None:
            if not isinstance(status, str):
                raise TypeError("status must be a string.")
            run.set_status(status)
        if metadata is not None:
            if not isinstance(metadata, dict):
                raise TypeError("metadata must be an object.")
            run.set_metadata(metadata)
        if tags is not None:
            if isinstance(tags, str):
                tags = [tags]
            if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
                raise TypeError("tags must be a string or a list of strings.")
            run.add_tags(tags)
        return run

    # -- faults -----------------------------------------------------------------------------

    def inject_fault(
        self,
        run_id: str,
        key: str,
        kind: str,
        *,
        times: int = 1,
        after: int = 0,
        status: int = 503,
        seconds: float = 5.0,
        variant: str = "all",
        body: Any = None,
    ) -> Fault:
        """Make the next ``times`` reads of stream ``key`` of ``run_id`` misbehave.

        ``key`` is the stream name as stored: an output key, or ``$trigger.input:<id>``.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"Unknown fault kind {kind!r}; expected one of {FAULT_KINDS}.")
        if key == RUN_SHAPE_KEY and kind not in SHAPE_FAULT_KINDS:
            raise ValueError(
                f"Fault kind {kind!r} does not apply to a run shape; expected one of "
                f"{SHAPE_FAULT_KINDS}."
            )
        if kind == "must-refetch" and key != RUN_SHAPE_KEY:
            raise ValueError(f"Fault kind 'must-refetch' applies to key {RUN_SHAPE_KEY!r} only.")
        if times < 1:
            raise ValueError("times must be at least 1.")
        if after < 0:
            raise ValueError("after must be 0 or more.")
        if kind == "status" and not (status == 429 or 500 <= status <= 599):
            raise ValueError(f"status must be 429 or 5xx, got {status}.")
        if seconds < 0:
            raise ValueError("seconds must be 0 or more.")
        if variant not in MALFORMED_VARIANTS:
            raise ValueError(
                f"Unknown malformed variant {variant!r}; expected {MALFORMED_VARIANTS}."
            )
        fault = Fault(
            kind=kind,  # type: ignore[arg-type]
            times=times,
            after=after,
            status=status,
            seconds=seconds,
            variant=variant,
            body=body,
        )
        self.faults.setdefault((run_id, key), []).append(fault)
        run = self.runs.get(run_id)
        if key == RUN_SHAPE_KEY and run is not None:
            # A parked live request answers the fault at once, so its place is deterministic.
            run.wake_shapes()
        return fault

    def has_fault(self, run_id: str, key: str) -> bool:
        return bool(self.faults.get((run_id, key)))

    def take_fault(self, run_id: str, key: str) -> Fault | None:
        pending = self.faults.get((run_id, key))
        if not pending:
            return None
        fault = pending[0]
        fault.times -= 1
        if fault.times <= 0:
            pending.pop(0)
        return fault

    # -- request log ------------------------------------------------------------------------

    def log_request(
        self,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        auth: str,
        jwt_scopes: list[str] | None,
        peer_port: int | None = None,
    ) -> LoggedRequest:
        self._request_index += 1
        entry = LoggedRequest(
            self._request_index, method, path, query, headers, auth, jwt_scopes, peer_port=peer_port
        )
        self.requests.append(entry)
        return entry

    def clear_requests(self) -> None:
        self.requests.clear()
