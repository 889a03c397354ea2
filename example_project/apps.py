"""The example project as an app: its model, and its defined streams registered at start-up."""

from __future__ import annotations

from django.apps import AppConfig


class ExampleProjectConfig(AppConfig):
    name = "example_project"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Defined streams are checked by id in the consumer: register them in every process,
        # also in one that serves only WebSockets and never imports the views.
        from example_project import streams  # noqa: F401
