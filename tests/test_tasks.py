"""trigger_django.tasks: trigger() from sync code, atrigger() from async code, clear errors."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async

from trigger_django.client import RunHandle, verify_public_token
from trigger_django.tasks import atrigger, trigger
from trigger_django.upstream import UpstreamConfigurationError, aclose_http_clients


def test_trigger_from_plain_sync_code_returns_the_run_and_its_token(trigger_settings, emulator):
    handle = trigger("echo-parts", {"parts": ["a", "b"]}, tags=["user_1"], metadata={"k": 1})
    assert isinstance(handle, RunHandle)
    assert handle.id.startswith("run_")
    run = emulator.wait_for_status(handle.id, "COMPLETED_SUCCESSFULLY")
    assert run["payload"] == {"parts": ["a", "b"]}
    assert run["tags"] == ["user_1"]
    assert run["streams"] == {"default": 2}
    scopes = verify_public_token(handle.public_access_token, emulator.secret_key)
    assert f"read:runs:{handle.id}" in scopes


def test_trigger_works_again_and_again_each_call_on_its_own_pool(trigger_settings, emulator):
    # The bug this module fixes: the shared pool belongs to one event loop, and every
    # async_to_sync call from a plain thread runs on a new one.
    ids = {trigger("echo-parts", {"parts": [n]}).id for n in range(3)}
    assert len(ids) == 3


def test_trigger_from_a_worker_thread(trigger_settings, emulator):
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(trigger("echo-parts", {})))
    thread.start()
    thread.join(30)
    assert len(results) == 1
    assert results[0].id.startswith("run_")


def test_trigger_options_are_passed_on(trigger_settings, emulator):
    first = trigger("echo-parts", {"parts": []}, idempotency_key="same-key-1")
    again = trigger("echo-parts", {"parts": []}, idempotency_key="same-key-1")
    assert again.id == first.id
    assert again.is_cached
    assert not first.is_cached


@pytest.mark.django_db(transaction=True)
async def test_a_sync_view_under_asgi_triggers_on_the_servers_loop(
    trigger_settings, emulator, async_client, django_user_model
):
    # Django runs a sync view in a thread and its async_to_sync call on the server's own loop.
    user = await django_user_model.objects.acreate(username="ada")
    await async_client.aforce_login(user)
    response = await async_client.post("/", {"prompt": "from an async server"})
    assert response.status_code == 302
    run_id = response["Location"].split("/")[2]
    run = await asyncio.to_thread(emulator.run, run_id)
    assert run["payload"] == {"prompt": "from an async server"}


async def test_atrigger_in_async_code(trigger_settings, emulator):
    try:
        handle = await atrigger("echo-parts", {"parts": ["x"]})
        assert handle.id.startswith("run_")
        run = await asyncio.to_thread(emulator.wait_for_status, handle.id, "COMPLETED_SUCCESSFULLY")
        assert run["streams"] == {"default": 1}
    finally:
        await aclose_http_clients()


async def test_trigger_on_an_event_loop_says_to_use_atrigger(trigger_settings):
    with pytest.raises(RuntimeError, match=r"await atrigger\(\.\.\.\)"):
        trigger("echo-parts", {})


def test_atrigger_through_async_to_sync_works_too(trigger_settings, emulator):
    async def go() -> RunHandle:
        try:
            return await atrigger("echo-parts", {})
        finally:
            await aclose_http_clients()

    assert async_to_sync(go)().id.startswith("run_")


@pytest.mark.parametrize("call", ["sync", "async"])
def test_no_secret_key_says_what_to_set_and_where(settings, monkeypatch, emulator, call):
    monkeypatch.delenv("TRIGGER_SECRET_KEY", raising=False)
    settings.TRIGGER_DJANGO = {"API_URL": emulator.url}
    emulator.clear_requests()
    start = trigger if call == "sync" else async_to_sync(atrigger)
    with pytest.raises(UpstreamConfigurationError) as error:
        start("echo-parts", {})
    message = str(error.value)
    assert "Cannot trigger task 'echo-parts'" in message
    assert "TRIGGER_SECRET_KEY" in message
    assert 'TRIGGER_DJANGO = {"SECRET_KEY"' in message
    assert "trigger_emulator" in message
    assert emulator.requests() == []


def test_an_unknown_key_is_refused_by_the_upstream_with_its_status(settings, emulator):
    from trigger_django.client import AuthenticationError

    settings.TRIGGER_DJANGO = {
        "API_URL": emulator.url,
        "SECRET_KEY": "tr_dev_wrong_key_000000000000000000",
    }
    with pytest.raises(AuthenticationError):
        trigger("echo-parts", {})


def test_a_payload_that_is_not_json_is_a_type_error_before_any_request(trigger_settings, emulator):
    emulator.clear_requests()
    with pytest.raises(TypeError, match="JSON-serialisable"):
        trigger("echo-parts", {"when": object()})
    assert emulator.requests() == []


async def test_sync_to_async_wrapped_trigger_from_async_code(trigger_settings, emulator):
    # A sync helper called through sync_to_async runs in a thread without a loop: allowed.
    handle = await sync_to_async(trigger)("echo-parts", {})
    assert handle.id.startswith("run_")
