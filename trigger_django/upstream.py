"""The upstream Trigger.dev API as the Django side uses it: a shared HTTP pool and token minting.

httpx clients are bound to the event loop they were first used on, so the pools are per running
loop (a daphne process has one loop; every test has its own): one for ordinary requests, and
``STREAM_POOLS`` over which stream reads and run subscriptions are spread by run. httpcore scans
every connection of a pool whenever a request starts or a response closes, so one pool holding
400 open streams made 200 run updates arriving together (runs starting at once) cost 200 x 400
steps: a 350 ms stall of the loop. Sixteen pools cut that to about 20 ms.
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref
import zlib
from datetime import UTC, datetime

import httpx

from trigger_django.client import APIStatusError, TriggerClient, TriggerError, sign_public_token
from trigger_django.conf import get_config
from trigger_django.errors import ConfigurationError

__all__ = [
    "STREAM_POOLS",
    "aclose_http_clients",
    "get_client",
    "get_http_client",
    "mint_public_token",
]

#: Pools that long-lived requests (stream reads, run subscriptions) are spread over, by run.
STREAM_POOLS = 16
#: A stream pool's connection limit is its share of ``HTTP_MAX_CONNECTIONS``, and at least this.
_MIN_STREAM_POOL_CONNECTIONS = 64

#: Per loop: pool 0 for ordinary requests, 1..STREAM_POOLS for streams.
_http_clients: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[int, httpx.AsyncClient]
] = weakref.WeakKeyDictionary()
# The environment id (`sub`) never changes for a secret key: fetched once per process.
_subject_by_key: dict[tuple[str, str], str] = {}
_subject_lock: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


class UpstreamConfigurationError(ConfigurationError, TriggerError):
    """The Trigger.dev secret key is missing or refused, so nothing can be minted or read.

    A :class:`~trigger_django.errors.ConfigurationError` (503, the site's configuration is at
    fault) that is also a :class:`~trigger_django.client.TriggerError`, so code catching the
    client's errors catches it too."""


def get_http_client(run_id: str | None = None) -> httpx.AsyncClient:
    """The ``httpx.AsyncClient`` shared on the current event loop: for ordinary requests, or,
    given ``run_id``, the stream pool of that run (for its stream reads and run subscription)."""
    loop = asyncio.get_running_loop()
    pools = _http_clients.get(loop)
    if pools is None:
        pools = _http_clients[loop] = {}
    index = 0 if run_id is None else 1 + zlib.crc32(run_id.encode()) % STREAM_POOLS
    client = pools.get(index)
    if client is None or client.is_closed:
        config = get_config()
        limit = config.http_max_connections
        if index:
            limit = max(math.ceil(limit / STREAM_POOLS), _MIN_STREAM_POOL_CONNECTIONS)
        client = pools[index] = httpx.AsyncClient(
            # Streams are long-lived: no read timeout (the reader has its own stall handling).
            timeout=httpx.Timeout(30.0, read=None),
            limits=httpx.Limits(
                max_connections=limit,
                max_keepalive_connections=config.http_max_keepalive_connections,
            ),
        )
    return client


async def aclose_http_clients() -> None:
    """Close the current loop's shared pools (tests and shutdown hooks call this)."""
    loop = asyncio.get_running_loop()
    pools = _http_clients.pop(loop, None) or {}
    for client in pools.values():
        await client.aclose()


def get_client(*, access_token: str | None = None, run_id: str | None = None) -> TriggerClient:
    """A :class:`TriggerClient` on the shared pools, authorised by ``access_token`` when given,
    otherwise by the configured secret key; with ``run_id``, on that run's stream pool (for
    long-lived requests: stream reads, run subscriptions)."""
    config = get_config()
    if access_token is None and not config.secret_key:
        raise UpstreamConfigurationError(
            "No Trigger.dev secret key: set TRIGGER_DJANGO['SECRET_KEY'] or TRIGGER_SECRET_KEY."
        )
    return TriggerClient(
        config.api_url,
        secret_key=None if access_token is not None else config.secret_key,
        access_token=access_token,
        http_client=get_http_client(run_id),
    )


async def _subject(api_url: str, secret_key: str) -> str:
    cache_key = (api_url, secret_key)
    if cache_key in _subject_by_key:
        return _subject_by_key[cache_key]
    loop = asyncio.get_running_loop()
    lock = _subject_lock.setdefault(loop, asyncio.Lock())
    async with lock:
        if cache_key not in _subject_by_key:
            try:
                claims = await get_client().jwt_claims()
            except APIStatusError as exc:
                # Trigger.dev answered, and refused the key (or the URL is not its API). An
                # unreachable Trigger.dev is not a configuration problem: that error propagates.
                raise UpstreamConfigurationError(
                    f"Trigger.dev refused this server's secret key ({exc}); check "
                    "TRIGGER_DJANGO['SECRET_KEY'] (or TRIGGER_SECRET_KEY) and the API URL."
                ) from exc
            _subject_by_key[cache_key] = str(claims["sub"])
    return _subject_by_key[cache_key]


async def mint_public_token(scopes: list[str], *, ttl: int | None = None) -> tuple[str, int]:
    """Sign a public access token for ``scopes`` locally, as the SDK's ``auth.createPublicToken``
    does. Returns ``(token, expires_at)`` with ``expires_at`` in epoch seconds."""
    config = get_config()
    if not config.secret_key:
        raise UpstreamConfigurationError(
            "No Trigger.dev secret key: set TRIGGER_DJANGO['SECRET_KEY'] or TRIGGER_SECRET_KEY."
        )
    if not scopes:
        raise ValueError("A public token needs at least one scope; with none it grants nothing.")
    subject = await _subject(config.api_url, config.secret_key)
    now = int(time.time())
    expires_at = now + (ttl if ttl is not None else config.public_token_ttl)
    token = sign_public_token(
        config.secret_key,
        sub=subject,
        scopes=scopes,
        expiration=datetime.fromtimestamp(expires_at, tz=UTC),
    )
    return token, expires_at
