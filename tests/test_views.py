"""The token endpoint: POST /trigger/runs/<run_id>/token/ (login, CSRF, permission hook)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from django.conf import settings
from django.http import JsonResponse
from django.test import AsyncClient, Client
from django.views.debug import ExceptionReporter

from trigger_django.client import TriggerClient, verify_public_token
from trigger_django.upstream import aclose_http_clients

pytestmark = pytest.mark.django_db(transaction=True)


def deny_everything(user: Any, run_id: str, action: str) -> bool:
    return False


@pytest.fixture(autouse=True)
async def _close_shared_pool() -> AsyncIterator[None]:
    yield
    await aclose_http_clients()


@pytest.fixture
async def logged_in(django_user_model: Any) -> AsyncClient:
    user = await django_user_model.objects.acreate(username="ada")
    client = AsyncClient()
    await client.aforce_login(user)
    return client


async def test_anonymous_json_callers_get_401_json() -> None:
    response = await AsyncClient().post("/trigger/runs/run_abc/token/", headers={"accept": "*/*"})
    assert response.status_code == 401
    assert response.json() == {"error": "Authentication required."}


async def test_anonymous_browsers_are_sent_to_the_login_page() -> None:
    response = await AsyncClient().post(
        "/trigger/runs/run_abc/token/", headers={"accept": "text/html"}
    )
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=/trigger/runs/run_abc/token/")


async def test_only_post(logged_in: AsyncClient) -> None:
    assert (await logged_in.get("/trigger/runs/run_abc/token/")).status_code == 405


async def test_csrf_is_enforced(django_user_model: Any) -> None:
    user = await django_user_model.objects.acreate(username="eve")
    client = AsyncClient(enforce_csrf_checks=True)
    await client.aforce_login(user)
    assert (await client.post("/trigger/runs/run_abc/token/")).status_code == 403


async def test_invalid_run_id_says_what_is_wrong(logged_in: AsyncClient) -> None:
    response = await logged_in.post("/trigger/runs/run..x/token/")
    assert response.status_code == 400
    assert "Invalid run id 'run..x'" in response.json()["error"]


async def test_the_permission_hook_can_refuse(logged_in: AsyncClient, settings: Any) -> None:
    settings.TRIGGER_DJANGO = {
        **settings.TRIGGER_DJANGO,
        "AUTHORIZE": "tests.test_views.deny_everything",
    }
    response = await logged_in.post("/trigger/runs/run_abc/token/")
    assert response.status_code == 403
    assert response.json() == {"error": "You may not read run run_abc."}


async def test_mints_a_token_that_reads_exactly_that_run(
    logged_in: AsyncClient, trigger_settings: Any, emulator: Any
) -> None:
    run_id, _ = emulator.trigger("echo-parts", {"parts": ["one", "two"]})
    before = int(time.time())
    response = await logged_in.post(f"/trigger/runs/{run_id}/token/")
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert set(body) == {"token", "expiresAt"}
    assert verify_public_token(body["token"], settings.TEST_TRIGGER_SECRET_KEY) == [
        f"read:runs:{run_id}"
    ]
    assert before + 900 <= body["expiresAt"] <= int(time.time()) + 900
    # The token works upstream, as the official JS client would use it.
    async with TriggerClient(emulator.url, access_token=body["token"]) as client:
        chunks = [part.chunk async for part in client.read_stream(run_id, timeout_seconds=1)]
    assert chunks == ["one", "two"]


# --- issue 10, item 7: ids with a trailing newline ----------------------------------------------


async def test_a_run_id_with_a_trailing_newline_gets_no_token(
    logged_in: AsyncClient, trigger_settings: Any, emulator: Any
) -> None:
    run_id, _ = emulator.trigger("echo-parts", {"parts": ["one"]})
    response = await logged_in.post(f"/trigger/runs/{run_id}%0A/token/")
    assert response.status_code == 400
    assert response.json() == {
        "error": f"Invalid run id {run_id + chr(10)!r}: expected a Trigger.dev run id such as "
        "'run_abc123' (letters, digits, '_' and '-')."
    }
    assert "token" not in response.json()


@pytest.mark.django_db
def test_the_run_page_of_a_run_id_with_a_trailing_newline_is_not_found(
    django_user_model: Any,
) -> None:
    client = Client()
    client.force_login(django_user_model.objects.create(username="ada"))
    assert client.get("/runs/run_abc/").status_code == 200
    response = client.get("/runs/run_abc%0A/")
    assert response.status_code == 404
    assert b"data-ticket" not in response.content


# --- issue 10, items 11 and 12 ------------------------------------------------------------------


async def test_a_missing_secret_key_is_a_503_that_names_the_configuration(
    logged_in: AsyncClient, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRIGGER_SECRET_KEY", raising=False)
    settings.TRIGGER_DJANGO = {**settings.TRIGGER_DJANGO, "SECRET_KEY": None}
    response = await logged_in.post("/trigger/runs/run_abc/token/")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error.startswith("No Trigger.dev secret key: set TRIGGER_DJANGO['SECRET_KEY']")
    assert "problem in this site's configuration" in error


async def test_an_unexpected_error_after_minting_is_a_500_without_the_token(
    logged_in: AsyncClient,
    trigger_settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    trigger_settings.DEBUG = True

    class BrokenResponse(JsonResponse):
        def __init__(self, data: Any, **kwargs: Any) -> None:
            if "token" in data:  # only the answer carrying the minted token breaks
                raise RuntimeError("a bug after minting")
            super().__init__(data, **kwargs)

    monkeypatch.setattr("trigger_django.views.JsonResponse", BrokenResponse)
    with caplog.at_level(logging.ERROR, logger="trigger_django.views"):
        response = await logged_in.post("/trigger/runs/run_abc/token/")
    assert response.status_code == 500
    assert b"A bug in this server" in response.content
    assert b"eyJ" not in response.content
    [record] = [r for r in caplog.records if r.exc_info]
    assert record.exc_info is not None
    html = ExceptionReporter(response.asgi_request, *record.exc_info).get_traceback_html()
    assert "a bug after minting" in html
    assert "eyJ" not in html


async def test_a_secret_key_trigger_dev_refuses_is_a_503_that_names_the_configuration(
    logged_in: AsyncClient, trigger_settings: Any
) -> None:
    trigger_settings.TRIGGER_DJANGO = {
        **trigger_settings.TRIGGER_DJANGO,
        "SECRET_KEY": "tr_dev_refused_key_0123456789abcdefghijklmnop",
    }
    response = await logged_in.post("/trigger/runs/run_abc/token/")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error.startswith("Trigger.dev refused this server's secret key")
    assert "problem in this site's configuration" in error
    assert "tr_dev" not in error


async def test_an_unreachable_trigger_dev_is_a_503_that_names_trigger_dev(
    logged_in: AsyncClient,
) -> None:
    # tests/settings.py points API_URL at a closed port. Not reaching Trigger.dev while fetching
    # the token claims is Trigger.dev's side, not a configuration error.
    response = await logged_in.post("/trigger/runs/run_abc/token/")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error.startswith("Trigger.dev could not be reached.")
    assert "problem at Trigger.dev" in error
    assert "configuration" not in error
