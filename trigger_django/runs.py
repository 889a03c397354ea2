"""What ``{% run_status %}`` and ``{% run_viewer %}`` show of a run: its status in words and
the progress its metadata carries.

Statuses are the strings the SDK gives (``QUEUED``, ``EXECUTING``, ``WAITING``, ``COMPLETED``,
``FAILED``, ``CANCELED``, …). Progress is read from the run's metadata in this shape, which a
task sets with ``metadata.set("progress", 0.4)`` and ``metadata.set("step", "Searching")``::

    {"progress": 0.4, "step": "Searching"}

``progress`` is a number from 0 to 1 (values outside are clamped; anything else is ignored),
``step`` an optional label.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from django.template.loader import render_to_string
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from trigger_django.client import Run, TriggerClient
from trigger_django.conf import get_config
from trigger_django.parts import DEFAULT_PART_PREFIX, render_part, validate_part_prefix
from trigger_django.tickets import RUN_WIDE, make_ticket, validate_run_id, validate_stream_key
from trigger_django.upstream import UpstreamConfigurationError

if TYPE_CHECKING:
    from trigger_django.snapshot import Snapshot

__all__ = [
    "FINISHED_STATUSES",
    "Progress",
    "StatusView",
    "fetch_run",
    "parts_html",
    "progress_from_metadata",
    "recent_run",
    "render_run_status",
    "render_run_viewer",
    "status_view",
]

#: Status → (label, tone). Tones style the badge: pending, active, waiting, success, failure.
_STATUSES: dict[str, tuple[str, str]] = {
    "PENDING_VERSION": ("Waiting for a deploy", "pending"),
    "QUEUED": ("Queued", "pending"),
    "DELAYED": ("Delayed", "pending"),
    "DEQUEUED": ("Starting", "pending"),
    "EXECUTING": ("Executing", "active"),
    "WAITING": ("Waiting", "waiting"),
    "COMPLETED": ("Completed", "success"),
    "FAILED": ("Failed", "failure"),
    "CANCELED": ("Cancelled", "failure"),
    "CRASHED": ("Crashed", "failure"),
    "SYSTEM_FAILURE": ("System failure", "failure"),
    "EXPIRED": ("Expired", "failure"),
    "TIMED_OUT": ("Timed out", "failure"),
}
#: Statuses after which a run changes no more (the SDK's ``isCompleted``).
FINISHED_STATUSES = frozenset(
    {"COMPLETED", "FAILED", "CANCELED", "CRASHED", "SYSTEM_FAILURE", "EXPIRED", "TIMED_OUT"}
)


@dataclass(frozen=True)
class StatusView:
    status: str
    label: str
    tone: str

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES


@dataclass(frozen=True)
class Progress:
    value: float
    step: str | None

    @property
    def percent(self) -> int:
        return round(self.value * 100)


def status_view(status: str | None) -> StatusView:
    """The badge for ``status``; ``None`` (not known yet) shows as loading."""
    if status is None:
        return StatusView("", "Loading…", "pending")
    label, tone = _STATUSES.get(status, (status.replace("_", " ").capitalize(), "pending"))
    return StatusView(status, label, tone)


def progress_from_metadata(metadata: Any) -> Progress | None:
    """The ``{"progress": 0.4, "step": "Searching"}`` part of a run's metadata, if any."""
    if not isinstance(metadata, dict):
        return None
    value = metadata.get("progress")
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return None
    step = metadata.get("step")
    return Progress(min(max(float(value), 0.0), 1.0), step if isinstance(step, str) else None)


# --- the tags ---------------------------------------------------------------------------------
#: A state fetched for one render serves the others of the same page (and request).
_STATE_TTL_SECONDS = 1.0
_recent: dict[str, tuple[float, Run | None]] = {}
logger = logging.getLogger(__name__)


def fetch_run(run_id: str, *, deadline: float | None = None) -> Run | None:
    """The run's current state for a page being rendered, or ``None`` when it cannot be had
    within ``deadline`` seconds (``RUN_STATE_DEADLINE``; 0: not fetched) or from async code,
    which must not block: the socket brings the state instead."""
    if deadline is None:
        deadline = get_config().run_state_deadline
    if deadline <= 0:
        return None
    now = time.monotonic()
    cached = _recent.get(run_id)
    if cached is not None and now - cached[0] < _STATE_TTL_SECONDS:
        return cached[1]
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return None  # rendering inside an event loop: never block it (and cache nothing)
    from trigger_django.snapshot import bounded_sync

    run = bounded_sync(_first_state, run_id, deadline)
    if len(_recent) > 1024:
        _recent.clear()
    _recent[run_id] = (now, run)
    return run


def recent_run(run_id: str) -> Run | None:
    """The state `fetch_run` got for this page's render (within the last second), if any:
    never fetches."""
    cached = _recent.get(run_id)
    if cached is not None and time.monotonic() - cached[0] < _STATE_TTL_SECONDS:
        return cached[1]
    return None


async def _first_state(run_id: str, deadline: float) -> Run | None:
    config = get_config()
    if not config.secret_key:
        raise UpstreamConfigurationError("No Trigger.dev secret key.")
    async with httpx.AsyncClient(timeout=deadline) as http:
        client = TriggerClient(config.api_url, secret_key=config.secret_key, http_client=http)
        async with asyncio.timeout(deadline):
            async with client.subscribe_run(run_id) as runs:
                async for run in runs:
                    return run
    return None


def _streams_option(streams: object) -> list[str] | None:
    if streams is None or streams == "":
        return None
    names = streams.split(",") if isinstance(streams, str) else streams
    if not isinstance(names, list | tuple):
        raise ValueError(f"streams= must be a comma-separated string or a list, got {streams!r}.")
    keys = [validate_stream_key(str(name).strip()) for name in names if str(name).strip()]
    return keys or None


def _part_templates_option(value: object) -> dict[str, str]:
    if value is None:
        return {RUN_WIDE: DEFAULT_PART_PREFIX}
    if isinstance(value, str):
        return {RUN_WIDE: validate_part_prefix(value)}
    if isinstance(value, dict):
        chosen = {
            _stream_or_all(key): validate_part_prefix(prefix) for key, prefix in value.items()
        }
        chosen.setdefault(RUN_WIDE, DEFAULT_PART_PREFIX)
        return chosen
    raise ValueError(
        "part_templates= must be a template directory or a dict of them by stream key, "
        f"got {value!r}."
    )


def _stream_or_all(key: object) -> str:
    return RUN_WIDE if key == RUN_WIDE else validate_stream_key(key)


def render_run_status(
    *,
    user_pk: object,
    run_id: object,
    template_name: str = "trigger_django/run_status.html",
    element_id: str | None = None,
    run: Run | None = None,
) -> SafeString:
    """The typed function behind ``{% run_status %}``: a badge and, when the metadata has
    progress, a ``<progress>``; server-rendered with the state at render time, then live."""
    run_id = validate_run_id(run_id)
    state = run if run is not None else fetch_run(run_id)
    context = _run_context(state) | {
        "ticket": make_ticket(user_pk=user_pk, run_id=run_id, key=RUN_WIDE),
        "run_id": run_id,
        "element_id": element_id or f"trigger-run-{run_id}",
    }
    return mark_safe(render_to_string(template_name, context).strip())


def render_run_viewer(
    *,
    user_pk: object,
    run_id: object,
    streams: object = None,
    part_templates: object = None,
    throttle_ms: int | None = None,
    timeout: int | None = None,
    template_name: str = "trigger_django/run_viewer.html",
    element_id: str | None = None,
    run: Run | None = None,
) -> SafeString:
    """The typed function behind ``{% run_viewer %}``: the run's status and metadata, and
    every stream of the run as it appears, on the page's one socket.

    The streams the run has at render time are rendered with what they hold already
    (`trigger_django.snapshot.read_snapshots`, one ``SNAPSHOT_DEADLINE`` for all), each with
    its cursor, so the page's socket resumes after it; a finished run whose every stream was
    read to its end renders ``complete``, and the page opens no socket for it."""
    run_id = validate_run_id(run_id)
    config = get_config()
    chosen = _part_templates_option(part_templates)
    wanted = _streams_option(streams)
    state = run if run is not None else fetch_run(run_id)
    ticket = make_ticket(user_pk=user_pk, run_id=run_id, key=RUN_WIDE, part_templates=chosen)
    throttle = config.throttle_ms if throttle_ms is None else int(throttle_ms)
    idle_timeout = config.timeout_seconds if timeout is None else int(timeout)
    view = status_view(None if state is None else state.status)
    keys = [] if state is None else _run_stream_keys(state, wanted)
    from trigger_django.snapshot import read_snapshots

    snapshots = read_snapshots(run_id, keys, finished=view.finished)
    sections = [
        _stream_section(
            key,
            snapshots.get(key),
            prefix=chosen.get(key) or chosen[RUN_WIDE],
            ticket=ticket,
            run_id=run_id,
            throttle_ms=throttle,
            timeout=idle_timeout,
        )
        for key in keys
    ]
    context = _run_context(state) | {
        "ticket": ticket,
        "run_id": run_id,
        "element_id": element_id or f"trigger-run-{run_id}",
        "streams": ",".join(wanted or []),
        "throttle_ms": throttle,
        "timeout": idle_timeout,
        # Finished, and every stream's whole text in the page: nothing is left to follow.
        "complete": view.finished and all(complete for complete, _ in sections),
        "stream_sections": mark_safe("".join(html for _, html in sections)),
    }
    return mark_safe(render_to_string(template_name, context).strip())


def _run_stream_keys(run: Run, wanted: list[str] | None) -> list[str]:
    """The run's streams (``withStreams()``'s discovery), in its order, only ``wanted`` ones."""
    keys: list[str] = []
    for key in dict.fromkeys(run.stream_keys()):
        try:
            key = validate_stream_key(key)
        except ValueError:
            continue  # a name no viewer could subscribe to; the page skips it too
        if wanted is None or key in wanted:
            keys.append(key)
    return keys


def _stream_section(
    key: str,
    snapshot: Snapshot | None,
    *,
    prefix: str,
    ticket: str,
    run_id: str,
    throttle_ms: int,
    timeout: int,
) -> tuple[bool, str]:
    """One stream's section of a run viewer, in the markup ``trigger-django.js`` builds for a
    stream that appears live (``addRunStreams``), holding the parts read so far: whether it is
    complete, and its HTML."""
    output = ""
    if snapshot is not None:
        try:
            output = parts_html(snapshot.chunks, prefix=prefix)
        except Exception as exc:  # a part template that fails: the live path reports it
            logger.warning(
                "trigger_django: stream %r of run %s not rendered at render time: %s",
                key,
                run_id,
                exc,
            )
            snapshot = None
    context = {
        "key": key,
        "snapshot": snapshot,
        "complete": snapshot is not None and snapshot.complete,
        "ticket": ticket,
        "run_id": run_id,
        "throttle_ms": throttle_ms,
        "timeout": timeout,
        "output": mark_safe(output),
    }
    html = render_to_string("trigger_django/run_viewer_stream.html", context).strip()
    return snapshot is not None and snapshot.complete, html


def parts_html(chunks: list[Any], *, prefix: str = DEFAULT_PART_PREFIX) -> str:
    """The HTML the page builds from these parts (``drawParts`` in ``trigger-django.js``):
    text parts run together as text (escaped) in one ``<p class="trigger-run__text">`` until a
    part rendered by its template (autoescaped) comes between."""
    pieces: list[str] = []
    text: list[str] | None = None
    for chunk in chunks:
        rendered = render_part(chunk, prefix=prefix)
        if rendered.kind == "text":
            if text is None:
                text = []
            text.append(rendered.content)
            continue
        if text is not None:
            pieces.append(_text_block(text))
            text = None
        pieces.append(rendered.content)
    if text is not None:
        pieces.append(_text_block(text))
    return "".join(pieces)


def _text_block(texts: list[str]) -> str:
    return f'<p class="trigger-run__text" data-trigger-text>{escape("".join(texts))}</p>'


def _run_context(run: Run | None) -> dict[str, Any]:
    if run is None:
        return {"view": status_view(None), "progress": None, "metadata_json": "", "error": None}
    return {
        "view": status_view(run.status),
        "progress": progress_from_metadata(run.metadata),
        "metadata_json": "" if run.metadata is None else json.dumps(run.metadata, indent=2),
        "error": None if run.error is None else run.error.message,
    }
