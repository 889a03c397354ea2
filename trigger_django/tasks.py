"""Start Trigger.dev runs from Django code: :func:`trigger` in sync code, :func:`atrigger` in
async code (Django's naming, as ``get``/``aget``).

>>> from trigger_django.tasks import trigger
>>> handle = trigger("ai-writer", {"prompt": "Hello"}, tags=["user:42"])
>>> handle.id, handle.public_access_token

Both read the upstream from settings (``TRIGGER_DJANGO["API_URL"]``/``["SECRET_KEY"]``, else the
official SDK's ``TRIGGER_API_URL``/``TRIGGER_SECRET_KEY``) and return a
:class:`~trigger_django.client.RunHandle`. Its token can read the run *and* send to its input
streams: keep it on the server (``{% stream_viewer %}`` mints a read-only one for pages).
"""

from __future__ import annotations

import asyncio
from typing import Any

from asgiref.sync import async_to_sync

from trigger_django.client import RunHandle, TriggerClient
from trigger_django.conf import Config, get_config
from trigger_django.upstream import UpstreamConfigurationError, get_client

__all__ = ["RunHandle", "atrigger", "own_client", "require_secret_key", "trigger"]


def require_secret_key(action: str) -> Config:
    """The settings, or a :class:`UpstreamConfigurationError` saying what to set and where."""
    config = get_config()
    if not config.secret_key:
        raise UpstreamConfigurationError(
            f"Cannot {action}: no Trigger.dev secret key is configured. Set the "
            "TRIGGER_SECRET_KEY environment variable of the server process (the tr_dev_… or "
            "tr_prod_… key from your Trigger.dev project's API keys page), or "
            'TRIGGER_DJANGO = {"SECRET_KEY": ...} in your settings; self-hosted Trigger.dev also '
            "needs TRIGGER_API_URL. For local development run the emulator "
            "(python manage.py trigger_emulator) and point TRIGGER_API_URL at the URL it prints."
        )
    return config


def refuse_event_loop(name: str, async_name: str) -> None:
    """Raise a clear error when a sync API is called on a thread running an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(
        f"trigger_django: {name}() is for sync code, and this thread runs an event loop "
        f"(an async view or consumer): use `await {async_name}(...)` instead."
    )


def own_client(config: Config) -> TriggerClient:
    """A client with its own connection pool, for one call from sync code: the shared pool
    (``upstream.get_http_client``) belongs to one event loop, and ``async_to_sync`` may run each
    call on a different, short-lived loop. Use it as ``async with own_client(config) as c:``."""
    return TriggerClient(config.api_url, secret_key=config.secret_key, max_connections=10)


async def atrigger(task_id: str, payload: Any = None, **options: Any) -> RunHandle:
    """Trigger ``task_id`` with a JSON ``payload`` from async code, on the shared pool.

    ``options`` are the SDK's trigger options, in snake_case or camelCase: ``idempotency_key``,
    ``tags``, ``metadata``, ``delay``, ``ttl``, ``max_attempts``, ``queue``,
    ``concurrency_key``, … (see :meth:`TriggerClient.trigger`).
    """
    require_secret_key(f"trigger task {task_id!r}")
    return await get_client().trigger(task_id, payload, **options)


def trigger(task_id: str, payload: Any = None, **options: Any) -> RunHandle:
    """Trigger ``task_id`` from sync code (a plain view, a management command, a Celery task).

    Same arguments and result as :func:`atrigger`. Each call opens its own short-lived
    connection pool, so it works whether or not an event loop exists elsewhere in the process.
    """
    refuse_event_loop("trigger", "atrigger")
    config = require_secret_key(f"trigger task {task_id!r}")

    async def call() -> RunHandle:
        async with own_client(config) as client:
            return await client.trigger(task_id, payload, **options)

    return async_to_sync(call)()
