"""The ``TRIGGER_DJANGO`` settings dict, merged over :data:`DEFAULTS` and cached.

Read settings with :func:`get_config`; the cache is cleared whenever a test (or anything else)
changes ``TRIGGER_DJANGO`` through ``override_settings``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

#: The defaults every key of ``TRIGGER_DJANGO`` falls back to (documented in docs/settings.md).
DEFAULTS: dict[str, Any] = {
    # Upstream Trigger.dev API. ``None`` reads the official SDK's environment variables.
    "API_URL": None,  # TRIGGER_API_URL, else https://api.trigger.dev
    "SECRET_KEY": None,  # TRIGGER_SECRET_KEY; never sent to a browser
    # Dotted path to ``(user, run_id, action) -> bool``; action is "read" or "write".
    "AUTHORIZE": "trigger_django.permissions.authenticated_user",
    # Path the WebSocket consumer is routed at (without leading slash).
    "WEBSOCKET_PATH": "trigger/ws/",
    # Lifetime of the signed subscription tickets rendered into pages, in seconds.
    "TICKET_MAX_AGE": 3600,
    # Lifetime of public access tokens minted by the token endpoint and the consumer.
    "PUBLIC_TOKEN_TTL": 900,
    # The hook's defaults.
    "THROTTLE_MS": 16,
    "TIMEOUT_SECONDS": 60,
    # Parts sent to a browser and not yet acknowledged before the consumer stops reading upstream.
    "MAX_UNACKED_PARTS": 2000,
    # Bytes sent to one socket and not yet acknowledged, all its subscriptions together.
    "MAX_UNACKED_BYTES": 4 * 1024 * 1024,
    # Subscribes per minute (bursts of as many) per socket and per user; refused ones count.
    "SUBSCRIBE_RATE_PER_SOCKET": 120,
    "SUBSCRIBE_RATE_PER_USER": 600,
    # Live streams one user may read at once in one server process (each holds a connection).
    "MAX_STREAMS_PER_USER": 32,
    # Streams follow their run: a viewer completes when the run finishes (not after an idle
    # timeout) and waits on while it runs. Costs one run subscription per run and process.
    "FOLLOW_RUNS": True,
    # Seconds {% run_status %} / {% run_viewer %} wait for the run's state while the page
    # renders (it is then in the first HTML); 0 renders "Loading…" and lets the socket tell.
    "RUN_STATE_DEADLINE": 2.0,
    # Seconds {% stream_viewer %} reads the stream while the page renders, so that the text so
    # far is in the first HTML (a v2 read stops as soon as it has caught up); 0 turns it off.
    "SNAPSHOT_DEADLINE": 0.5,
    # Largest input-stream send accepted (the Trigger.dev limit is 1 MiB).
    "MAX_INPUT_BYTES": 1024 * 1024,
    # httpx pool limits for upstream connections; each open stream holds one connection.
    "HTTP_MAX_CONNECTIONS": 1000,
    "HTTP_MAX_KEEPALIVE_CONNECTIONS": 100,
    # Input streams by id: {"approval": "myapp.forms.ApprovalForm"}. Rendered forms of other
    # streams use the default form; programmatic (keyless) sends only reach listed streams.
    "INPUT_FORMS": {},
    # Cross-process fan-out (one upstream reader per stream for the whole cluster, elected on
    # Redis): None (off), or {"REDIS_URL": "redis://…", "LEASE_SECONDS": 5, …} (FANOUT_DEFAULTS).
    "FANOUT": None,
}

#: The keys of a ``FANOUT`` dict and their defaults (``REDIS_URL`` is required).
FANOUT_DEFAULTS: dict[str, Any] = {
    "REDIS_URL": None,
    # Seconds the upstream reader's lease lasts unrenewed: a dead reader is replaced within it.
    "LEASE_SECONDS": 5.0,
    # Relay entries kept per stream (Redis Streams ``MAXLEN ~``); older ones are read upstream.
    "MAXLEN": 10_000,
    # Seconds a relay stream outlives its last entry.
    "RETENTION_SECONDS": 3600,
    # Prefix of every Redis key the fan-out writes.
    "KEY_PREFIX": "trigger_django:",
}

DEFAULT_API_URL = "https://api.trigger.dev"
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


@dataclass(frozen=True)
class FanoutConfig:
    redis_url: str
    lease_seconds: float
    maxlen: int
    retention_seconds: float
    key_prefix: str


@dataclass(frozen=True)
class Config:
    api_url: str
    secret_key: str | None
    authorize: str
    websocket_path: str
    ticket_max_age: int
    public_token_ttl: int
    throttle_ms: int
    timeout_seconds: int
    max_unacked_parts: int
    max_unacked_bytes: int
    subscribe_rate_per_socket: int
    subscribe_rate_per_user: int
    max_streams_per_user: int
    follow_runs: bool
    run_state_deadline: float
    snapshot_deadline: float
    max_input_bytes: int
    http_max_connections: int
    http_max_keepalive_connections: int
    input_forms: dict[str, str]
    fanout: FanoutConfig | None = None


@lru_cache(maxsize=1)
def get_config() -> Config:
    user: dict[str, Any] = getattr(settings, "TRIGGER_DJANGO", {}) or {}
    unknown = sorted(set(user) - set(DEFAULTS))
    if unknown:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(
            f"Unknown TRIGGER_DJANGO key(s): {', '.join(unknown)}. "
            f"Known keys: {', '.join(sorted(DEFAULTS))}."
        )
    merged = {**DEFAULTS, **user}
    api_url = merged["API_URL"] or os.environ.get("TRIGGER_API_URL") or DEFAULT_API_URL
    secret_key = merged["SECRET_KEY"] or os.environ.get("TRIGGER_SECRET_KEY") or None
    return Config(
        api_url=str(api_url).rstrip("/"),
        secret_key=secret_key,
        authorize=merged["AUTHORIZE"],
        websocket_path=str(merged["WEBSOCKET_PATH"]).lstrip("/"),
        ticket_max_age=int(merged["TICKET_MAX_AGE"]),
        public_token_ttl=int(merged["PUBLIC_TOKEN_TTL"]),
        throttle_ms=int(merged["THROTTLE_MS"]),
        timeout_seconds=int(merged["TIMEOUT_SECONDS"]),
        max_unacked_parts=int(merged["MAX_UNACKED_PARTS"]),
        max_unacked_bytes=int(merged["MAX_UNACKED_BYTES"]),
        subscribe_rate_per_socket=int(merged["SUBSCRIBE_RATE_PER_SOCKET"]),
        subscribe_rate_per_user=int(merged["SUBSCRIBE_RATE_PER_USER"]),
        max_streams_per_user=int(merged["MAX_STREAMS_PER_USER"]),
        follow_runs=bool(merged["FOLLOW_RUNS"]),
        run_state_deadline=float(merged["RUN_STATE_DEADLINE"]),
        snapshot_deadline=float(merged["SNAPSHOT_DEADLINE"]),
        max_input_bytes=int(merged["MAX_INPUT_BYTES"]),
        http_max_connections=int(merged["HTTP_MAX_CONNECTIONS"]),
        http_max_keepalive_connections=int(merged["HTTP_MAX_KEEPALIVE_CONNECTIONS"]),
        input_forms=dict(merged["INPUT_FORMS"]),
        fanout=_fanout_config(merged["FANOUT"]),
    )


def _fanout_config(value: Any) -> FanoutConfig | None:
    """Validate ``TRIGGER_DJANGO["FANOUT"]``; every mistake is an ``ImproperlyConfigured`` that
    says what is wrong (reported by the system check ``trigger_django.E009``)."""
    from django.core.exceptions import ImproperlyConfigured

    if value is None or value is False:
        return None
    if not isinstance(value, dict):
        raise ImproperlyConfigured(
            f"TRIGGER_DJANGO['FANOUT'] must be None (off) or a dict such as "
            f"{{'REDIS_URL': 'redis://127.0.0.1:6379/0'}}, not {type(value).__name__}."
        )
    unknown = sorted(set(value) - set(FANOUT_DEFAULTS))
    if unknown:
        raise ImproperlyConfigured(
            f"Unknown TRIGGER_DJANGO['FANOUT'] key(s): {', '.join(map(str, unknown))}. "
            f"Known keys: {', '.join(sorted(FANOUT_DEFAULTS))}."
        )
    merged = {**FANOUT_DEFAULTS, **value}
    url = merged["REDIS_URL"]
    if not isinstance(url, str) or not url.startswith(_REDIS_SCHEMES):
        raise ImproperlyConfigured(
            "TRIGGER_DJANGO['FANOUT']['REDIS_URL'] must be a Redis URL "
            f"(redis://, rediss:// or unix://), not {url!r}."
        )

    def number(name: str, minimum: float, *, integer: bool = False) -> float:
        raw = merged[name]
        if isinstance(raw, bool) or not isinstance(raw, int | float) or raw < minimum:
            raise ImproperlyConfigured(
                f"TRIGGER_DJANGO['FANOUT'][{name!r}] must be a number of at least {minimum:g}, "
                f"not {raw!r}."
            )
        if integer and raw != int(raw):
            raise ImproperlyConfigured(
                f"TRIGGER_DJANGO['FANOUT'][{name!r}] must be a whole number, not {raw!r}."
            )
        return float(raw)

    prefix = merged["KEY_PREFIX"]
    if not isinstance(prefix, str) or not prefix or "{" in prefix or "}" in prefix:
        raise ImproperlyConfigured(
            "TRIGGER_DJANGO['FANOUT']['KEY_PREFIX'] must be a non-empty string without braces "
            f"(they are Redis Cluster hash tags), not {prefix!r}."
        )
    return FanoutConfig(
        redis_url=url,
        lease_seconds=number("LEASE_SECONDS", 0.5),
        maxlen=int(number("MAXLEN", 100, integer=True)),
        retention_seconds=number("RETENTION_SECONDS", 60),
        key_prefix=prefix,
    )


@receiver(setting_changed)
def _reset_config(*, setting: str, **kwargs: Any) -> None:
    if setting == "TRIGGER_DJANGO":
        get_config.cache_clear()
