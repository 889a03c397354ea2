"""The example project for tests where many users watch one run (the fan-out cluster test):
any logged-in user may watch any run, as with trigger_django's default permission hook."""

from __future__ import annotations

from example_project.settings import *  # noqa: F403
from example_project.settings import TRIGGER_DJANGO as _EXAMPLE_TRIGGER_DJANGO

TRIGGER_DJANGO = {
    **_EXAMPLE_TRIGGER_DJANGO,
    "AUTHORIZE": "trigger_django.permissions.authenticated_user",
}
