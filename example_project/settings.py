"""Settings of the example project: SQLite, in-memory channel layer, the upstream from the
environment variables the official SDK reads (``TRIGGER_API_URL``, ``TRIGGER_SECRET_KEY``).

``DJANGO_DEBUG=1`` (the default, for ``make demo``) allows a built-in development
``SECRET_KEY``; with ``DJANGO_DEBUG=0`` the project refuses to start without
``DJANGO_SECRET_KEY``.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set and DEBUG is off (DJANGO_DEBUG=0). Set "
            "DJANGO_SECRET_KEY to a long random value, e.g. the output of "
            "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`; it signs sessions "
            "and the stream tickets. For local development only, run with DJANGO_DEBUG=1."
        )
    # Published in the repository, so only ever used with DEBUG on.
    SECRET_KEY = "example-project-insecure-key-for-debug-only-0123456789"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "daphne",  # first: `runserver` becomes the ASGI server
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "trigger_django",
    "example_project",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "example_project.middleware.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "example_project.urls"
ASGI_APPLICATION = "example_project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_DB_NAME", str(BASE_DIR / "db.sqlite3")),
        # Overridable so that several test runs on one checkout do not share a file.
        "TEST": {"NAME": os.environ.get("DJANGO_TEST_DB_NAME", str(BASE_DIR / "test_db.sqlite3"))},
    }
}

CHANNEL_LAYERS: dict[str, dict[str, object]] = {
    "default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}
}
if os.environ.get("REDIS_URL"):
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # socket_timeout None: redis-py 8's 5 s default is shorter than channels_redis's
            # blocking pop, which closes idle sockets with 1011 (docs/deployment.md).
            "CONFIG": {"hosts": [{"address": os.environ["REDIS_URL"], "socket_timeout": None}]},
        }
    }

AUTH_PASSWORD_VALIDATORS: list[dict[str, str]] = []
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# trigger_django reads TRIGGER_API_URL and TRIGGER_SECRET_KEY itself. Only the user who started
# a run (example_project.models.AiRun) may watch or answer it.
TRIGGER_DJANGO: dict[str, object] = {"AUTHORIZE": "example_project.permissions.owns_run"}

# Set by `make demo` (example_project/demo.py): the login page then names the demo account.
EXAMPLE_DEMO_LOGIN = os.environ.get("EXAMPLE_DEMO_LOGIN") or None
# TRIGGER_FANOUT=1 (with REDIS_URL): one upstream reader per stream for all workers
# (docs/deployment.md, section 4).
if os.environ.get("REDIS_URL") and os.environ.get("TRIGGER_FANOUT") == "1":
    TRIGGER_DJANGO["FANOUT"] = {
        "REDIS_URL": os.environ["REDIS_URL"],
        "LEASE_SECONDS": float(os.environ.get("TRIGGER_FANOUT_LEASE_SECONDS", "5")),
    }

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"trigger_django": {"handlers": ["console"], "level": "INFO"}},
}
