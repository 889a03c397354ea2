"""Default permission hooks for ``TRIGGER_DJANGO["AUTHORIZE"]``."""

from __future__ import annotations

from typing import Any, Literal

Action = Literal["read", "write"]


def authenticated_user(user: Any, run_id: str, action: Action) -> bool:
    """Allow any logged-in, active user. Replace with a check of who owns ``run_id``."""
    return bool(getattr(user, "is_authenticated", False) and getattr(user, "is_active", False))
