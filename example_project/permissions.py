"""The example project's ``TRIGGER_DJANGO["AUTHORIZE"]`` hook: a run belongs to who started it."""

from __future__ import annotations

from typing import Any

from example_project.models import AiRun


def owns_run(user: Any, run_id: str, action: str) -> bool:
    """Only the active user who started ``run_id`` may watch it (``read``) or answer it
    (``write``). Runs started elsewhere (no record) belong to nobody here."""
    if not (getattr(user, "is_authenticated", False) and getattr(user, "is_active", False)):
        return False
    return AiRun.objects.filter(run_id=run_id, owner=user).exists()
