"""HTTP endpoints: ``path("trigger/", include("trigger_django.urls"))``."""

from __future__ import annotations

from django.urls import path

from trigger_django import views

app_name = "trigger_django"

# `str` (anything but "/", a newline included) on purpose: the views check run ids and stream ids
# whole (`validate_run_id` / `validate_stream_key`, `re.fullmatch`), so a bad id such as
# `run_1%0A` gets a 400 saying what is wrong instead of a bare 404 from a stricter converter.

urlpatterns = [
    path("runs/<str:run_id>/token/", views.token_view, name="token"),
    path("runs/<str:run_id>/input/<str:stream_id>/", views.send_input_view, name="send_input"),
]
