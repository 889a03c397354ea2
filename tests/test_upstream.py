"""The shared upstream pools: ordinary requests in one, stream reads and run subscriptions
spread by run over ``STREAM_POOLS`` (httpcore's per-pool cost grows with its connections)."""

from __future__ import annotations

import asyncio

import pytest
from django.test import override_settings

from trigger_django import upstream
from trigger_django.upstream import STREAM_POOLS, aclose_http_clients, get_http_client


def _limit(client: object) -> int:
    return int(client._transport._pool._max_connections)  # type: ignore[attr-defined]


async def test_runs_are_spread_over_the_stream_pools_apart_from_ordinary_requests() -> None:
    try:
        ordinary = get_http_client()
        assert get_http_client() is ordinary
        run_pools = {f"run_{n}": get_http_client(f"run_{n}") for n in range(400)}
        # One run always reads on the same pool, never on the ordinary one.
        assert all(get_http_client(run) is pool for run, pool in run_pools.items())
        assert ordinary not in run_pools.values()
        # 400 runs land on every stream pool, none with far more than its share.
        per_pool: dict[int, int] = {}
        for pool in run_pools.values():
            per_pool[id(pool)] = per_pool.get(id(pool), 0) + 1
        assert len(per_pool) == STREAM_POOLS
        assert max(per_pool.values()) < 3 * 400 / STREAM_POOLS
    finally:
        await aclose_http_clients()
    assert ordinary.is_closed
    assert all(pool.is_closed for pool in run_pools.values())


@pytest.mark.parametrize(("total", "stream_pool"), [(1000, 64), (3200, 200)])
async def test_a_stream_pool_gets_its_share_of_the_connection_limit(
    total: int, stream_pool: int
) -> None:
    with override_settings(TRIGGER_DJANGO={"HTTP_MAX_CONNECTIONS": total}):
        try:
            assert _limit(get_http_client()) == total
            assert _limit(get_http_client("run_abc")) == stream_pool
        finally:
            await aclose_http_clients()


def test_each_event_loop_has_its_own_pools() -> None:
    async def pools() -> tuple[object, object, asyncio.AbstractEventLoop]:
        try:
            return get_http_client(), get_http_client("run_abc"), asyncio.get_running_loop()
        finally:
            await aclose_http_clients()

    first, second = asyncio.run(pools()), asyncio.run(pools())
    assert first[0] is not second[0]
    assert first[1] is not second[1]
    # Closed with their loop's aclose_http_clients(), and forgotten.
    assert all(client.is_closed for client in (*first[:2], *second[:2]))  # type: ignore[attr-defined]
    assert first[2] not in upstream._http_clients
    assert second[2] not in upstream._http_clients
