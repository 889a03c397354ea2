"""The runs in Django's admin."""

from __future__ import annotations

from django.contrib import admin

from example_project.models import AiRun


@admin.register(AiRun)
class AiRunAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("run_id", "owner", "prompt", "created_at")
    list_filter = ("owner",)
    search_fields = ("run_id", "prompt")
