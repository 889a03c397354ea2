"""The send view behind ``{% approval_form %}``, against a real emulator process."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest
from django import forms
from django.contrib.auth import get_user_model
from django.contrib.messages import get_messages
from django.core.asgi import get_asgi_application
from django.test import AsyncClient
from django.urls import reverse
from django.views.debug import ExceptionReporter

from trigger_django.forms import make_idempotency_key, register_input_form
from trigger_django.signals import input_sent
from trigger_django.upstream import aclose_http_clients

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "pw-for-tests"
RUN_PAGE = "/runs/run_page/"


class RefundForm(forms.Form):
    amount = forms.IntegerField(min_value=1)
    note = forms.CharField(required=False)
    reviewer = forms.CharField()  # declared, yet only ever filled by the server

    server_fields = {"reviewer": lambda request: request.user.get_username()}

    def server_data(self, request):
        return {"channel": "web"}


def is_bearer_jwt(header: str) -> bool:
    return header.startswith("Bearer " + JWT_PREFIX)


#: Every JWT starts with this (base64 of '{"'). Kept away from code the tracebacks show.
JWT_PREFIX = "eyJ"


class UnregisteredForm(forms.Form):
    """Importable, but neither rendered by a tag, nor an InputStream's, nor in INPUT_FORMS."""

    anything = forms.CharField(required=False)


class BuggyForm(forms.Form):
    def server_data(self, request):
        raise ZeroDivisionError("a bug in the site's form")


def deny_writes(user, run_id, action):
    return action != "write"


async def deny_writes_async(user, run_id, action):
    return action != "write"


@pytest.fixture(autouse=True)
async def _close_upstream_pool():
    yield
    await aclose_http_clients()


@pytest.fixture
async def alice():
    return await get_user_model().objects.acreate_user(username="alice", password=PASSWORD)


@pytest.fixture
async def client(alice):
    client = AsyncClient()
    await client.aforce_login(alice)
    return client


@pytest.fixture
def emu(emulator, trigger_settings):
    # Programmatic (keyless) sends to "approval" are allowed, validated by the default form.
    trigger_settings.TRIGGER_DJANGO = {
        **trigger_settings.TRIGGER_DJANGO,
        "INPUT_FORMS": {"approval": "trigger_django.forms.ApprovalForm"},
    }
    emulator.clear_requests()
    return emulator


async def start_run(emulator) -> str:
    """A ``demo-ai-writer`` run: it streams an answer, then waits for ``approval``."""
    run_id, _ = await asyncio.to_thread(
        emulator.trigger, "demo-ai-writer", {"prompt": "tests", "tokens_per_second": 100_000}
    )
    return run_id


def url(run_id: str, stream_id: str = "approval") -> str:
    return reverse("trigger_django:send_input", args=[run_id, stream_id])


def input_posts(emulator) -> list[dict]:
    return [
        entry
        for entry in emulator.requests()
        if entry["method"] == "POST" and "/input/" in entry["path"]
    ]


async def wait_finished(emulator, run_id: str) -> dict:
    def finished():
        run = emulator.run(run_id)
        return run if run["status"].startswith("COMPLETED") else None

    return await asyncio.to_thread(emulator.wait_for, finished, 10.0)


async def post_json(client, target: str, body, **headers):
    return await client.post(
        target,
        json.dumps(body),
        content_type="application/json",
        headers={"Accept": "application/json", **headers},
    )


# --- who may send -------------------------------------------------------------------------------


async def test_anonymous_browser_is_sent_to_login_and_back_to_the_page(emu):
    response = await AsyncClient().post(url("run_x"), {"approved": "true", "next": RUN_PAGE})
    assert response.status_code == 302
    assert response.url == f"{reverse('login')}?next={RUN_PAGE}"
    assert input_posts(emu) == []


async def test_anonymous_json_gets_401(emu):
    response = await post_json(AsyncClient(), url("run_x"), {"data": {"approved": True}})
    assert response.status_code == 401
    assert response.json() == {"error": "Log in to send input to a run."}
    assert input_posts(emu) == []


async def test_missing_csrf_token_is_refused_for_forms_and_json(emu, alice):
    run_id = await start_run(emu)
    client = AsyncClient(enforce_csrf_checks=True)
    await client.aforce_login(alice)
    secret = "a" * 32
    client.cookies["csrftoken"] = secret

    form = await client.post(url(run_id), {"approved": "true"})
    assert form.status_code == 403
    assert b"CSRF" in form.content
    as_json = await post_json(client, url(run_id), {"data": {"approved": True}})
    assert as_json.status_code == 403
    assert "CSRF" in as_json.json()["error"]
    assert input_posts(emu) == []

    # The same request with the token goes through: the 403s above were the CSRF check.
    allowed = await post_json(
        client, url(run_id), {"data": {"approved": True}}, **{"X-CSRFToken": secret}
    )
    assert allowed.status_code == 200, allowed.content
    assert len(input_posts(emu)) == 1


async def test_csrf_token_kept_in_the_session_is_checked_too(emu, alice, settings):
    # With CSRF_USE_SESSIONS the view's own CSRF check reads the secret from the session.
    settings.CSRF_USE_SESSIONS = True
    run_id = await start_run(emu)
    client = AsyncClient(enforce_csrf_checks=True)
    await client.aforce_login(alice)
    page = await client.get(reverse("run", args=[run_id]))
    token = page.context["csrf_token"]

    refused = await post_json(client, url(run_id), {"data": {"approved": True}})
    assert refused.status_code == 403
    allowed = await post_json(
        client, url(run_id), {"data": {"approved": True}}, **{"X-CSRFToken": str(token)}
    )
    assert allowed.status_code == 200, allowed.content
    assert len(input_posts(emu)) == 1


@pytest.mark.parametrize("hook", ["deny_writes", "deny_writes_async"])
async def test_authorize_hook_saying_no_gives_403(emu, client, settings, hook):
    settings.TRIGGER_DJANGO = {**settings.TRIGGER_DJANGO, "AUTHORIZE": f"{__name__}.{hook}"}
    run_id = await start_run(emu)
    response = await post_json(client, url(run_id), {"data": {"approved": True}})
    assert response.status_code == 403
    assert response.json()["error"] == f"You may not send input to run {run_id}."
    assert input_posts(emu) == []


async def test_get_is_not_allowed(client):
    response = await client.get(url("run_x"))
    assert response.status_code == 405


# --- what may be sent ---------------------------------------------------------------------------


async def test_invalid_input_gives_400_with_field_errors(emu, client):
    run_id = await start_run(emu)
    response = await client.post(
        url(run_id), {"approved": "maybe"}, headers={"Accept": "application/json"}
    )
    assert response.status_code == 400
    assert response.json() == {
        "ok": False,
        "error": "The input is not valid.",
        "fields": {"approved": ["Choose approve or reject (send true or false, not 'maybe')."]},
    }
    missing = await post_json(client, url(run_id), {"data": {}})
    assert missing.json()["fields"] == {"approved": ["Choose approve or reject."]}
    assert input_posts(emu) == []


async def test_invalid_input_from_a_browser_redirects_back_with_the_error(emu, client):
    run_id = await start_run(emu)
    response = await client.post(url(run_id), {"next": RUN_PAGE})
    assert response.status_code == 302
    assert response.url == RUN_PAGE
    shown = [str(message) for message in get_messages(response.asgi_request)]
    assert shown == ["The input is not valid. approved: Choose approve or reject."]
    assert input_posts(emu) == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("not json", "The request body is not valid JSON."),
        ('{"approved": true}', 'Send a JSON object of the form {"data": {...}}'),
    ],
)
async def test_malformed_json_is_explained(emu, client, body, message):
    response = await client.post(
        url("run_x"), body, content_type="application/json", headers={"Accept": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"].startswith(message)


async def test_oversize_input_gets_413_and_nothing_is_forwarded(emu, client):
    run_id = await start_run(emu)
    big = {"data": {"approved": True, "padding": "x" * (1024 * 1024 + 10_000)}}
    response = await post_json(client, url(run_id), big)
    assert response.status_code == 413
    assert "too large" in response.json()["error"]
    # Over DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB) as a form: still our 413, not Django's 400.
    form = await client.post(
        url(run_id),
        "approved=true&padding=" + "x" * (3 * 1024 * 1024),
        content_type="application/x-www-form-urlencoded",
        headers={"Accept": "application/json"},
    )
    assert form.status_code == 413
    assert input_posts(emu) == []


async def test_oversize_body_without_content_length_gets_413(emu):
    """A chunked upload declares no size: the body actually received is measured."""

    async def chunks():
        for _ in range(20):
            yield b"x" * 65536  # 1.25 MiB in all

    transport = httpx.ASGITransport(app=get_asgi_application())
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        response = await http.post(
            url("run_x"),
            content=chunks(),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert input_posts(emu) == []


async def test_forwarded_payload_over_the_limit_gets_413(emu, client, settings):
    settings.TRIGGER_DJANGO = {**settings.TRIGGER_DJANGO, "MAX_INPUT_BYTES": 40}
    run_id = await start_run(emu)
    response = await post_json(client, url(run_id), {"data": {"approved": True}})
    # {"data":{"approved":true,"reviewer":"alice"}} is 44 bytes.
    assert response.status_code == 413
    assert input_posts(emu) == []


# --- what happens upstream ----------------------------------------------------------------------


async def test_completed_run_gives_400_with_a_clear_message(emu, client):
    run_id = await start_run(emu)
    await asyncio.to_thread(emu.complete_run, run_id)
    response = await post_json(client, url(run_id), {"data": {"approved": True}})
    assert response.status_code == 400
    assert response.json()["error"] == "The run has already finished; it no longer accepts input."


async def test_unknown_run_gives_404(emu, client):
    response = await post_json(client, url("run_doesnotexist"), {"data": {"approved": True}})
    assert response.status_code == 404
    assert response.json()["error"].startswith("Trigger.dev has no such run or stream")


async def test_wrong_server_credentials_give_503_then_the_same_form_can_retry(
    emu, client, settings
):
    run_id = await start_run(emu)
    key = make_idempotency_key(run_id, "approval")
    good = settings.TRIGGER_DJANGO
    settings.TRIGGER_DJANGO = {**good, "SECRET_KEY": "tr_dev_wrong_key_0123456789abcdefghijklmnop"}
    refused = await post_json(
        client, url(run_id), {"data": {"approved": True}, "idempotency_key": key}
    )
    # Our configuration is at fault (not the browser, not Trigger.dev): 503, and it says so.
    assert refused.status_code == 503
    assert "refused this server's secret key" in refused.json()["error"]
    assert "problem in this site's configuration" in refused.json()["error"]
    assert "tr_dev" not in refused.content.decode()

    settings.TRIGGER_DJANGO = good
    retried = await post_json(
        client, url(run_id), {"data": {"approved": True}, "idempotency_key": key}
    )
    assert retried.status_code == 200
    assert "duplicate" not in retried.json()
    assert len(emu.run(run_id)["inputs"]) == 1


async def test_spoofed_reviewer_is_overwritten(emu, client):
    run_id = await start_run(emu)
    response = await post_json(
        client, url(run_id), {"data": {"approved": True, "reviewer": "mallory"}}
    )
    assert response.status_code == 200
    form = await client.post(
        url(await start_run(emu)),
        {"approved": "false", "reviewer": "mallory"},
        headers={"Accept": "application/json"},
    )
    assert form.status_code == 200
    inputs = [entry["data"] for entry in emu.run(run_id)["inputs"]]
    assert inputs == [{"approved": True, "reviewer": "alice"}]
    assert form.json()["data"] == {"approved": False, "reviewer": "alice"}


async def test_double_submit_sends_once(emu, client):
    run_id = await start_run(emu)
    key = make_idempotency_key(run_id, "approval")
    form = {"approved": "true", "idempotency_key": key, "next": RUN_PAGE}
    first = await client.post(url(run_id), form, headers={"Accept": "application/json"})
    second = await client.post(url(run_id), form, headers={"Accept": "application/json"})
    assert first.status_code == second.status_code == 200
    assert second.json() == {**first.json(), "duplicate": True}
    # Going back and pressing the other button on the same rendered form sends nothing either;
    # the answer says what was actually sent.
    form["approved"] = "false"
    third = await client.post(url(run_id), form, headers={"Accept": "application/json"})
    assert third.json()["message"] == "Approved."
    assert third.json()["data"] == {"approved": True, "reviewer": "alice"}
    assert len(input_posts(emu)) == 1
    assert len(emu.run(run_id)["inputs"]) == 1


async def test_a_keyless_send_to_a_stream_without_a_server_chosen_form_is_refused(emu, client):
    # Only the rendered form's signed key or INPUT_FORMS may choose the validating form; a
    # client leaving the key out must not fall back to a laxer default.
    run_id = await start_run(emu)
    response = await post_json(client, url(run_id, "refund"), {"data": {"approved": True}})
    assert response.status_code == 400
    assert "INPUT_FORMS" in response.json()["error"]
    assert input_posts(emu) == []


@pytest.mark.parametrize("key", [123, True, ["k"]])
async def test_an_idempotency_key_that_is_not_a_string_is_a_400(emu, client, key):
    run_id = await start_run(emu)
    response = await post_json(
        client, url(run_id), {"data": {"approved": True}, "idempotency_key": key}
    )
    assert response.status_code == 400
    assert "idempotency_key" in response.json()["error"]
    assert input_posts(emu) == []


async def test_the_same_rendered_form_is_remembered_per_user(emu, client, django_user_model):
    # A page cached for several users carries one key: each user's decision is sent. (A run
    # of a task with no simulated function stays open, so both sends reach it.)
    run_id, _ = await asyncio.to_thread(emu.trigger, "external-writer", {})
    key = make_idempotency_key(run_id, "approval")
    bob = await django_user_model.objects.acreate_user(username="bob", password=PASSWORD)
    other = AsyncClient()
    await other.aforce_login(bob)
    first = await post_json(
        client, url(run_id), {"data": {"approved": True}, "idempotency_key": key}
    )
    second = await post_json(
        other, url(run_id), {"data": {"approved": False}, "idempotency_key": key}
    )
    assert first.status_code == 200
    assert "duplicate" not in second.json()
    assert second.json()["data"] == {"approved": False, "reviewer": "bob"}
    assert len(input_posts(emu)) == 2


async def test_simultaneous_double_submit_sends_once(emu, client):
    run_id = await start_run(emu)
    key = make_idempotency_key(run_id, "approval")
    form = {"approved": "true", "idempotency_key": key}
    responses = await asyncio.gather(
        *(client.post(url(run_id), form, headers={"Accept": "application/json"}) for _ in range(3))
    )
    bodies = [response.json() for response in responses]
    assert [response.status_code for response in responses] == [200, 200, 200]
    assert sorted(body.get("duplicate", False) for body in bodies) == [False, True, True]
    assert {json.dumps(body["data"]) for body in bodies} == {
        '{"approved": true, "reviewer": "alice"}'
    }
    assert len(input_posts(emu)) == 1


async def test_key_for_another_run_is_refused(emu, client):
    run_id = await start_run(emu)
    key = make_idempotency_key("run_other", "approval")
    response = await client.post(
        url(run_id),
        {"approved": "true", "idempotency_key": key},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 400
    assert "another run or stream" in response.json()["error"]
    assert input_posts(emu) == []


async def test_approval_reaches_the_task_which_continues(emu, client, caplog):
    run_id = await start_run(emu)
    received = []

    async def receiver(sender, **kwargs):
        received.append(kwargs)

    input_sent.connect(receiver)
    try:
        with caplog.at_level(logging.INFO, logger="trigger_django.input"):
            response = await client.post(
                url(run_id), {"approved": "true"}, headers={"Accept": "application/json"}
            )
    finally:
        input_sent.disconnect(receiver)
    assert response.status_code == 200
    assert response.json() == {
        "ok": True,
        "message": "Approved.",
        "runId": run_id,
        "streamId": "approval",
        "data": {"approved": True, "reviewer": "alice"},
    }
    run = await wait_finished(emu, run_id)
    assert [entry["data"] for entry in run["inputs"]] == [{"approved": True, "reviewer": "alice"}]
    assert run["output"] == {"approved": True, "reviewer": "alice"}
    [post] = input_posts(emu)
    assert post["jwt_scopes"] == [f"write:inputStreams:{run_id}"]

    [signal] = received
    assert signal["run_id"] == run_id
    assert signal["stream_id"] == "approval"
    assert signal["data"] == {"approved": True, "reviewer": "alice"}
    assert signal["user"].get_username() == "alice"
    [record] = [r for r in caplog.records if r.name == "trigger_django.input"]
    assert record.getMessage() == (
        f"alice sent input to stream 'approval' of run {run_id}: "
        '{"approved": true, "reviewer": "alice"}'
    )
    assert "eyJ" not in record.getMessage()  # no JWT (every JWT starts with "eyJ")


async def test_browser_post_redirects_back_with_a_message(emu, client):
    run_id = await start_run(emu)
    response = await client.post(url(run_id), {"approved": "false", "next": RUN_PAGE})
    assert response.status_code == 302
    assert response.url == RUN_PAGE
    assert [str(m) for m in get_messages(response.asgi_request)] == ["Rejected."]
    run = await wait_finished(emu, run_id)
    assert run["inputs"][0]["data"] == {"approved": False, "reviewer": "alice"}


async def test_next_on_another_site_is_not_followed(emu, client):
    run_id = await start_run(emu)
    response = await client.post(url(run_id), {"approved": "true", "next": "https://evil.example/"})
    assert response.status_code == 302
    assert response.url == "/"


async def test_the_form_named_in_the_rendered_key_validates_the_post(emu, client):
    run_id = await start_run(emu)
    # The tag registers the form it renders (and InputStream the form it is given).
    key = make_idempotency_key(run_id, "refund", register_input_form(RefundForm))
    accept = {"Accept": "application/json"}
    invalid = await client.post(
        url(run_id, "refund"), {"amount": "0", "idempotency_key": key}, headers=accept
    )
    assert invalid.status_code == 400
    assert invalid.json()["fields"] == {
        "amount": ["Ensure this value is greater than or equal to 1."]
    }
    sent = await client.post(
        url(run_id, "refund"),
        {"amount": "5", "reviewer": "mallory", "channel": "api", "idempotency_key": key},
        headers=accept,
    )
    assert sent.status_code == 200, sent.content
    assert sent.json()["message"] == "Sent."
    [received] = emu.run(run_id)["inputs"]
    assert received["streamId"] == "refund"
    assert received["data"] == {"amount": 5, "note": "", "reviewer": "alice", "channel": "web"}


async def test_input_forms_setting_chooses_the_form_for_programmatic_sends(emu, client, settings):
    settings.TRIGGER_DJANGO = {
        **settings.TRIGGER_DJANGO,
        "INPUT_FORMS": {"refund": f"{__name__}.RefundForm"},
    }
    run_id = await start_run(emu)
    response = await post_json(client, url(run_id, "refund"), {"data": {"amount": 7}})
    assert response.status_code == 200, response.content
    [received] = emu.run(run_id)["inputs"]
    assert received["data"] == {"amount": 7, "note": "", "reviewer": "alice", "channel": "web"}


# --- issue 10, item 10: a form key chooses among registered forms only --------------------------


@pytest.mark.parametrize(
    "form_name", ["django.forms.Form", f"{__name__}.UnregisteredForm", "os.system"]
)
async def test_a_signed_key_naming_an_unregistered_form_is_refused(emu, client, caplog, form_name):
    # Correctly signed (as someone holding the signing key could make it): still refused,
    # because the view looks the name up among the registered forms and imports nothing.
    run_id = await start_run(emu)
    key = make_idempotency_key(run_id, "approval", form_name)
    with caplog.at_level(logging.WARNING, logger="trigger_django.input"):
        response = await post_json(client, url(run_id), {"data": {}, "idempotency_key": key})
    [warning] = [
        r
        for r in caplog.records
        if r.name == "trigger_django.input" and r.levelno == logging.WARNING
    ]
    assert f"names {form_name!r}, which is not a registered input form" in warning.getMessage()
    assert response.status_code == 400
    error = response.json()["error"]
    assert error.startswith(f"The form this page was rendered with ({form_name!r}) is not one")
    assert "INPUT_FORMS" in error
    assert input_posts(emu) == []
    assert emu.run(run_id)["inputs"] == []


async def test_a_form_listed_in_input_forms_may_be_named_by_a_key(emu, client, settings):
    settings.TRIGGER_DJANGO = {
        **settings.TRIGGER_DJANGO,
        "INPUT_FORMS": {"refund": f"{__name__}.UnregisteredForm"},
    }
    run_id = await start_run(emu)
    key = make_idempotency_key(run_id, "refund", f"{__name__}.UnregisteredForm")
    response = await post_json(
        client, url(run_id, "refund"), {"data": {"anything": "x"}, "idempotency_key": key}
    )
    assert response.status_code == 200, response.content
    assert [entry["data"] for entry in emu.run(run_id)["inputs"]] == [{"anything": "x"}]


# --- issue 10, item 7: ids with a trailing newline ----------------------------------------------


@pytest.mark.parametrize(
    ("run_suffix", "stream_id", "message"),
    [
        ("\n", "approval", "Invalid run id 'run_"),
        ("", "approval\n", "Invalid stream key 'approval\\n'"),
    ],
)
async def test_ids_with_a_trailing_newline_are_a_400(emu, client, run_suffix, stream_id, message):
    run_id = await start_run(emu)
    target = url(run_id + run_suffix, stream_id)
    assert "%0A" in target
    response = await post_json(client, target, {"data": {"approved": True}})
    assert response.status_code == 400, response.content
    assert response.json()["error"].startswith(message)
    assert input_posts(emu) == []


# --- issue 10, item 11: no token on an error page -----------------------------------------------


@pytest.mark.parametrize("as_json", [True, False])
async def test_an_unexpected_error_after_minting_shows_no_token_even_with_debug(
    emu, client, settings, caplog, monkeypatch, as_json
):
    settings.DEBUG = True
    run_id = await start_run(emu)

    real_send = httpx.AsyncClient.send

    async def broken_send(self, request, **kwargs):
        if "/input/" not in str(request.url):  # the token claims, fetched once per process
            return await real_send(self, request, **kwargs)
        # A bug deep in the send: the caller's frames hold the minted token (the Authorization
        # header, the view's locals) when this raises.
        assert is_bearer_jwt(request.headers["Authorization"])
        raise RuntimeError("a bug below the send")

    monkeypatch.setattr(httpx.AsyncClient, "send", broken_send)
    with caplog.at_level(logging.ERROR, logger="trigger_django.input"):
        if as_json:
            response = await post_json(client, url(run_id), {"data": {"approved": True}})
        else:
            response = await client.post(url(run_id), {"approved": "true", "next": RUN_PAGE})
    if as_json:
        assert response.status_code == 500
        error = response.json()["error"]
    else:
        assert response.status_code == 302
        [error] = [str(message) for message in get_messages(response.asgi_request)]
    assert error.startswith("A bug in this server stopped the request")
    assert "eyJ" not in response.content.decode()
    assert "a bug below the send" not in error

    # The traceback is logged, and even Django's technical 500 page made from it (DEBUG on, so
    # sensitive_variables hides nothing by itself) shows no token: the frames' locals are gone.
    [record] = [r for r in caplog.records if r.exc_info]
    assert record.exc_info[0] is RuntimeError
    html = ExceptionReporter(response.asgi_request, *record.exc_info).get_traceback_html()
    assert "a bug below the send" in html
    assert "broken_send" in html
    assert "eyJ" not in html
    assert input_posts(emu) == []


# --- issue 10, item 12: one mapping, naming the party at fault ----------------------------------


async def test_a_missing_secret_key_is_a_503_that_names_the_configuration(
    emu, client, settings, monkeypatch
):
    run_id = await start_run(emu)
    monkeypatch.delenv("TRIGGER_SECRET_KEY", raising=False)
    settings.TRIGGER_DJANGO = {**settings.TRIGGER_DJANGO, "SECRET_KEY": None}
    response = await post_json(client, url(run_id), {"data": {"approved": True}})
    assert response.status_code == 503
    error = response.json()["error"]
    assert error.startswith("No Trigger.dev secret key")
    assert "problem in this site's configuration" in error
    assert "Trigger.dev answered" not in error
    assert input_posts(emu) == []


async def test_a_bug_in_a_form_is_a_500_that_says_so(emu, client, settings):
    settings.TRIGGER_DJANGO = {
        **settings.TRIGGER_DJANGO,
        "INPUT_FORMS": {"refund": f"{__name__}.BuggyForm"},
    }
    run_id = await start_run(emu)
    response = await post_json(client, url(run_id, "refund"), {"data": {}})
    assert response.status_code == 500
    assert response.json()["error"].startswith("A bug in this server")
    assert "Trigger.dev answered" not in response.json()["error"]
    assert input_posts(emu) == []


async def test_a_bad_input_forms_setting_is_a_503_that_names_the_configuration(
    emu, client, settings
):
    settings.TRIGGER_DJANGO = {
        **settings.TRIGGER_DJANGO,
        "INPUT_FORMS": {"refund": f"{__name__}.NoSuchForm"},
    }
    run_id = await start_run(emu)
    response = await post_json(client, url(run_id, "refund"), {"data": {}})
    assert response.status_code == 503
    error = response.json()["error"]
    assert "cannot import form class" in error
    assert "problem in this site's configuration" in error


async def test_deeply_nested_json_is_a_400(emu, client):
    response = await client.post(
        url("run_x"),
        '{"data": ' + "[" * 100_000 + "]" * 100_000 + "}",
        content_type="application/json",
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "The request body is nested too deeply to be read."
