"""Settings of daphne under the bench and the soak: the example project, quieter, with
``TRIGGER_DJANGO`` taken from the JSON in ``$BENCH_TRIGGER_DJANGO`` (e.g. ``{"FANOUT": …}``)."""

from __future__ import annotations

import json
import os

from example_project.settings import *  # noqa: F403

DEBUG = False
TRIGGER_DJANGO = json.loads(os.environ.get("BENCH_TRIGGER_DJANGO") or "{}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "trigger_django": {"handlers": ["console"], "level": "WARNING"},
        # daphne sets the root logger to INFO: httpx would log every upstream request.
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
    },
}
