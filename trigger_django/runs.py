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

from dataclasses import dataclass
from typing import Any

__all__ = [
    "FINISHED_STATUSES",
    "Progress",
    "StatusView",
    "progress_from_metadata",
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
