"""HTTP endpoints: ``path("trigger/", include("trigger_django.urls"))``."""

from __future__ import annotations

from django.urls import path

from trigger_django import views

app_name = "trigger_django"

urlpatterns = [
    path("runs/<str:run_id>/token/", views.token_view, name="token"),
    path("runs/<str:run_id>/input/<str:stream_id>/", views.send_input_view, name="send_input"),
]
