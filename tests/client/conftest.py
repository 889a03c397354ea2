from __future__ import annotations

import pytest

from trigger_django.client import TriggerClient

from .fakes import RecordingSleep, Script

SECRET = "tr_dev_" + "k" * 40


@pytest.fixture
def sleeps() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
async def make_client(sleeps):
    clients: list[TriggerClient] = []

    def make(script: Script, **kwargs) -> TriggerClient:
        kwargs.setdefault("secret_key", SECRET)
        kwargs.setdefault("retry_sleep", sleeps)
        kwargs.setdefault("retry_random", lambda: 0.5)
        client = TriggerClient("http://trigger.test", transport=script.transport, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()
