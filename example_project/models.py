"""Who started which run: the example project's record of each Trigger.dev run."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class AiRun(models.Model):
    """One run of the demo AI writer, owned by the user who started it.

    The permission hook (``example_project.permissions.owns_run``) lets only the owner watch
    and answer it.
    """

    run_id = models.CharField(max_length=128, unique=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="ai_runs"
    )
    prompt = models.CharField(max_length=500, blank=True)
    #: The demo task that runs it: the AI writer, or the weather agent.
    task = models.CharField(max_length=64, default="demo-ai-writer")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.run_id} ({self.owner})"
