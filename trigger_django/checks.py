"""System checks for the mistakes users make when wiring trigger_django up.

Ids are stable; each message says what is wrong and each hint what to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from trigger_django.conf import DEFAULTS, get_config


@register(Tags.compatibility)
def check_installation(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    installed = list(settings.INSTALLED_APPS)
    if not getattr(settings, "ASGI_APPLICATION", None):
        messages.append(
            Error(
                "ASGI_APPLICATION is not set, so nothing serves the trigger_django WebSocket.",
                hint="Set ASGI_APPLICATION = 'yourproject.asgi.application' and route "
                "trigger_django.routing.websocket_urlpatterns there (see docs/installation.md).",
                id="trigger_django.E001",
            )
        )
    if "channels" not in installed:
        messages.append(
            Error(
                "'channels' is missing from INSTALLED_APPS.",
                hint="Add 'channels' to INSTALLED_APPS.",
                id="trigger_django.E002",
            )
        )
    if "daphne" not in installed:
        messages.append(
            Warning(
                "'daphne' is missing from INSTALLED_APPS, so `manage.py runserver` is a WSGI "
                "server and the stream viewer's WebSocket gets HTTP 404.",
                hint="Put 'daphne' first in INSTALLED_APPS, or serve the project with daphne.",
                id="trigger_django.W003",
            )
        )
    return messages


@register(Tags.security)
def check_upstream(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    try:
        config = get_config()
    except ImproperlyConfigured as exc:
        return [
            Error(
                str(exc),
                hint="Fix the TRIGGER_DJANGO setting (see docs/settings.md).",
                id="trigger_django.E009",
            )
        ]
    messages: list[CheckMessage] = []
    if not config.secret_key:
        messages.append(
            Warning(
                "No Trigger.dev secret key: TRIGGER_DJANGO['SECRET_KEY'] and the "
                "TRIGGER_SECRET_KEY environment variable are both unset, so no stream can be "
                "read and no input sent.",
                hint="Set TRIGGER_SECRET_KEY in the server's environment (never in a template).",
                id="trigger_django.W004",
            )
        )
    if urlsplit(config.api_url).scheme not in {"http", "https"}:
        messages.append(
            Error(
                f"TRIGGER_DJANGO['API_URL'] {config.api_url!r} is not an http(s) URL.",
                hint="Use the Trigger.dev API URL, e.g. https://api.trigger.dev.",
                id="trigger_django.E008",
            )
        )
    try:
        import_string(config.authorize)
    except ImportError as exc:
        messages.append(
            Error(
                f"TRIGGER_DJANGO['AUTHORIZE'] {config.authorize!r} cannot be imported: {exc}.",
                hint="Give the dotted path of a function (user, run_id, action) -> bool.",
                id="trigger_django.E007",
            )
        )
    if config.authorize == DEFAULTS["AUTHORIZE"] and not settings.DEBUG:
        messages.append(
            Warning(
                "TRIGGER_DJANGO['AUTHORIZE'] is the default hook: every logged-in user may read "
                "and answer every run whose id they know.",
                hint="Point AUTHORIZE at a function (user, run_id, action) -> bool that checks "
                "who owns the run (see docs/installation.md, step 6).",
                id="trigger_django.W007",
            )
        )
    layers: dict[str, Any] = getattr(settings, "CHANNEL_LAYERS", {}) or {}
    backend = str(layers.get("default", {}).get("BACKEND", ""))
    if not settings.DEBUG and (not backend or backend.endswith("InMemoryChannelLayer")):
        messages.append(
            Warning(
                "CHANNEL_LAYERS has no cross-process layer; with several daphne workers each "
                "has its own in-memory layer.",
                hint="Use channels_redis (pip install 'trigger-django[redis]').",
                id="trigger_django.W005",
            )
        )
    messages.extend(_check_origin_validation())
    return messages


def _check_origin_validation() -> list[CheckMessage]:
    """Warn when the ASGI application routes WebSockets without an origin check."""
    path = getattr(settings, "ASGI_APPLICATION", None)
    if not path:
        return []
    try:
        application = import_string(path)
    except Exception:  # the E001-style problems are reported by Django/channels themselves
        return []
    from channels.security.websocket import OriginValidator

    mapping = getattr(application, "application_mapping", None)
    if not isinstance(mapping, dict) or "websocket" not in mapping:
        return []
    if isinstance(mapping["websocket"], OriginValidator):
        return []
    return [
        Warning(
            f"The WebSocket application of {path} is not wrapped in an origin validator, so any "
            "web site can open the stream socket with your users' cookies.",
            hint="Wrap it: AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(...))).",
            id="trigger_django.W006",
        )
    ]
