"""App config and system checks."""

from __future__ import annotations

from django.apps import AppConfig


class TriggerDjangoConfig(AppConfig):
    name = "trigger_django"
    verbose_name = "Trigger.dev realtime"

    def ready(self) -> None:
        from trigger_django import checks  # noqa: F401  (registers the system checks)
        from trigger_django.live import sessions  # noqa: F401  (logging out closes sockets)
