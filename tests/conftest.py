"""Shared fixtures. Each section belongs to the helper that wrote it; append, don't rewrite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.redis_server import RedisServer
from tests.settings import TEST_TRIGGER_SECRET_KEY
from trigger_django.emulator.testing import EmulatorProcess

# -- Emulator ---------------------------------------------------------------------------------
# One real emulator process per session (`python manage.py trigger_emulator --port 0`).


@pytest.fixture(scope="session")
def emulator() -> Iterator[EmulatorProcess]:
    """The emulator, with runs on v2 framing unless the trigger asks otherwise."""
    with EmulatorProcess(secret_key=TEST_TRIGGER_SECRET_KEY, stream_version="v2") as process:
        yield process


@pytest.fixture(scope="session")
def emulator_v1() -> Iterator[EmulatorProcess]:
    """A second emulator whose runs default to v1 (Redis) framing, like the real server."""
    with EmulatorProcess(secret_key=TEST_TRIGGER_SECRET_KEY, stream_version="v1") as process:
        yield process


@pytest.fixture
def trigger_settings(settings: Any, emulator: EmulatorProcess) -> Any:
    """Point ``TRIGGER_DJANGO`` at the session emulator with the test secret key."""
    settings.TRIGGER_DJANGO = {
        **getattr(settings, "TRIGGER_DJANGO", {}),
        "API_URL": emulator.url,
        "SECRET_KEY": TEST_TRIGGER_SECRET_KEY,
    }
    return settings


# -- Live path (the stream consumer and its hub) -------------------------------------------------
# Used by tests/test_consumers.py and tests/live/.


@pytest.fixture
def upstream(trigger_settings: Any, emulator: EmulatorProcess) -> EmulatorProcess:
    return emulator


@pytest.fixture
async def user(django_user_model: Any) -> Any:
    return await django_user_model.objects.acreate(username="ada")


@pytest.fixture
async def other_user(django_user_model: Any) -> Any:
    return await django_user_model.objects.acreate(username="bob")


@pytest.fixture(autouse=True)
def _fresh_subscribe_limits() -> Iterator[None]:
    """User pks repeat across tests (the database is flushed): start every test with fresh
    per-user subscribe rates and counts."""
    from trigger_django.live import limits

    limits.reset()
    yield
    limits.reset()


# -- Redis ------------------------------------------------------------------------------------


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server on a free port, stopped after the test."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
