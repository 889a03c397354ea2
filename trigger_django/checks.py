"""System checks for the mistakes users make when wiring trigger_django up.

Ids are stable; each message says what is wrong and each hint what to do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any
from urllib.parse import parse_qs, urlsplit

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


# The configuration that works on every redis-py: the hint of W008 and docs/deployment.md.
REDIS_LAYER_HINT = (
    "Give each host as a dict that turns the read timeout off: CHANNEL_LAYERS = {'default': "
    "{'BACKEND': 'channels_redis.core.RedisChannelLayer', 'CONFIG': {'hosts': "
    "[{'address': REDIS_URL, 'socket_timeout': None}]}}} (see docs/deployment.md)."
)


@register(Tags.compatibility)
def check_redis_layer(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    """W008: a channels_redis layer whose reads time out before its own blocking pop returns.

    redis-py 8 made ``socket_timeout`` default to 5 s; channels_redis's receive loop blocks in
    ``BZPOPMIN`` for ``brpop_timeout`` (5 s) on every idle consumer, so the read times out and
    the consumer dies with 1011 (django/channels_redis#422, redis/redis-py#4091).
    """
    layers: Mapping[str, Any] = getattr(settings, "CHANNEL_LAYERS", {}) or {}
    major = _redis_py_major()
    if major is None or major < 8:
        return []
    messages: list[CheckMessage] = []
    for alias, layer in layers.items():
        if not isinstance(layer, Mapping):
            continue
        block = _blocking_pop_seconds(str(layer.get("BACKEND", "")))
        if block is None:
            continue
        config = layer.get("CONFIG") or {}
        hosts = config.get("hosts") if isinstance(config, Mapping) else None
        for host in hosts or [None]:
            timeout = _socket_timeout(host)
            if timeout is not None and timeout < 2 * block:
                messages.append(
                    Warning(
                        f"CHANNEL_LAYERS[{alias!r}] host {_describe(host)} reads with a "
                        f"socket_timeout of {timeout:g} s (redis-py {major}'s default is 5 s), "
                        f"under twice the layer's {block:g} s blocking pop (BZPOPMIN): idle "
                        "WebSockets are closed with 1011 after about 5 s.",
                        hint=REDIS_LAYER_HINT,
                        id="trigger_django.W008",
                    )
                )
    return messages


def _redis_py_major() -> int | None:
    try:
        version = metadata.version("redis")
    except metadata.PackageNotFoundError:
        return None
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else None


def _blocking_pop_seconds(backend: str) -> float | None:
    """The seconds the backend's receive blocks in Redis, or None for a layer that never does."""
    if not backend.startswith("channels_redis."):
        return None
    try:
        layer_class = import_string(backend)
    except ImportError:
        return None
    block = getattr(layer_class, "brpop_timeout", None)  # the pubsub layer has none
    return float(block) if isinstance(block, int | float) else None


def _socket_timeout(host: object) -> float | None:
    """The socket_timeout redis-py 8 gives this channels_redis host (default 5 s).

    A URL's query wins over the dict's keys (``ConnectionPool.from_url`` merges it last).
    """
    default = 5.0
    if isinstance(host, Mapping):
        timeout = host.get("socket_timeout", default)
        address = host.get("address")
    else:
        timeout = default
        address = host if isinstance(host, str) else None
    if isinstance(address, str):
        query = parse_qs(urlsplit(address).query)
        if "socket_timeout" in query:
            try:
                return float(query["socket_timeout"][-1])
            except ValueError:
                return default
    if timeout is None:
        return None
    return float(timeout) if isinstance(timeout, int | float) else default


def _describe(host: object) -> str:
    if isinstance(host, Mapping):
        address = host.get("address") or host.get("master_name") or host.get("host")
        return repr(_without_password(str(address)))
    if isinstance(host, str):
        return repr(_without_password(host))
    return repr(host) if host is not None else "(the default redis://localhost:6379)"


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username or ''}:***@{parts.hostname}"
        if parts.port:
            netloc += f":{parts.port}"
        return parts._replace(netloc=netloc).geturl()
    return url


@register(Tags.compatibility)
def check_fanout(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    """E010 / W009: a ``FANOUT`` that cannot work, or one whose takeovers end viewers early.

    (A malformed ``FANOUT`` value is E009, like every bad ``TRIGGER_DJANGO`` value.)
    """
    try:
        config = get_config()
    except ImproperlyConfigured:
        return []  # reported as E009
    fanout = config.fanout
    if fanout is None:
        return []
    messages: list[CheckMessage] = []
    try:
        import redis.asyncio  # noqa: F401
    except ImportError:
        messages.append(
            Error(
                "TRIGGER_DJANGO['FANOUT'] is on but redis-py is not installed.",
                hint="pip install 'trigger-django[redis]', or set FANOUT to None.",
                id="trigger_django.E010",
            )
        )
    if fanout.lease_seconds >= config.timeout_seconds:
        messages.append(
            Warning(
                f"TRIGGER_DJANGO['FANOUT']['LEASE_SECONDS'] ({fanout.lease_seconds:g} s) is not "
                f"shorter than TIMEOUT_SECONDS ({config.timeout_seconds} s): while a dead "
                "upstream reader's lease runs out, the relay is silent, and viewers with the "
                "default idle timeout complete before the takeover.",
                hint="Keep LEASE_SECONDS well under the viewers' timeouts (the default is 5 s).",
                id="trigger_django.W009",
            )
        )
    return messages
