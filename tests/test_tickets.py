from __future__ import annotations

import json
import warnings
from datetime import UTC, datetime, timedelta

import pytest
from django.core import signing

from trigger_django.client import sign_public_token
from trigger_django.errors import describe
from trigger_django.tickets import (
    TICKET_SALT,
    TicketError,
    is_run_read_token,
    load_ticket,
    make_ticket,
    validate_run_id,
    validate_stream_key,
)

# Real Trigger.dev secret keys are 27 bytes, below PyJWT's recommended HMAC key length.
REAL_LENGTH_KEY = "tr_dev_" + "k" * 20


def read_token(secret_key: str, scopes: list[str], expires_in: int = 600) -> str:
    return sign_public_token(secret_key, sub="env_1", scopes=scopes, expiration=expires_in)


def test_a_ticket_round_trips():
    ticket = load_ticket(make_ticket(user_pk=7, run_id="run_1", key="ai-output"))
    assert (ticket.user_pk, ticket.run_id, ticket.key, ticket.access_token) == (
        "7",
        "run_1",
        "ai-output",
        None,
    )


def test_an_old_ticket_is_expired():
    ticket = make_ticket(user_pk=7, run_id="run_1", key="default")
    with pytest.raises(TicketError, match="expired") as caught:
        load_ticket(ticket, max_age=-1)
    assert caught.value.reason == "expired"


@pytest.mark.parametrize(
    "payload",
    [{"u": "7", "r": "../run", "k": "default"}, {"u": "7", "r": "run_1"}, ["run_1"]],
)
def test_a_signed_but_malformed_ticket_is_invalid(payload):
    with pytest.raises(TicketError, match="not valid"):
        load_ticket(signing.dumps(payload, salt=TICKET_SALT))


def test_a_ticket_signed_for_another_purpose_is_invalid():
    with pytest.raises(TicketError, match="not valid"):
        load_ticket(signing.dumps({"u": "7", "r": "run_1", "k": "default"}, salt="other"))


@pytest.mark.parametrize(
    ("scopes", "expected"),
    [
        (["read:runs:run_1"], True),
        (["read:runs:run_2"], False),
        (["read:runs"], False),
        (["read:runs:run_1", "write:inputStreams:run_1"], False),
    ],
)
def test_only_a_token_reading_exactly_this_run_may_be_rendered(settings, scopes, expected):
    settings.TRIGGER_DJANGO = {**settings.TRIGGER_DJANGO, "SECRET_KEY": REAL_LENGTH_KEY}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no InsecureKeyLengthWarning for real-length keys
        assert is_run_read_token(read_token(REAL_LENGTH_KEY, scopes), "run_1") is expected


def test_an_expired_or_foreign_token_is_not_rendered(settings):
    key = settings.TRIGGER_DJANGO["SECRET_KEY"]
    an_hour_ago = datetime.now(tz=UTC) - timedelta(hours=1)
    expired = sign_public_token(
        key, sub="env_1", scopes=["read:runs:run_1"], expiration=an_hour_ago
    )
    assert not is_run_read_token(expired, "run_1")
    foreign = read_token("tr_dev_" + "x" * 40, ["read:runs:run_1"])
    assert not is_run_read_token(foreign, "run_1")


@pytest.mark.parametrize("key", [".", "..", "a/b", "../x", ""])
def test_stream_keys_that_would_change_the_upstream_path_are_refused(key):
    with pytest.raises(ValueError, match="Invalid stream key"):
        validate_stream_key(key)


# --- issue 10, item 7: `$` matched before a trailing newline ------------------------------------


@pytest.mark.parametrize("run_id", ["run_1\n", "run_1\r\n", "\nrun_1", "run_1\n\n"])
def test_a_run_id_with_a_newline_is_refused(run_id):
    with pytest.raises(ValueError, match="Invalid run id") as caught:
        validate_run_id(run_id)
    # A request error (400), not a bug, wherever it surfaces.
    assert (describe(caught.value).status, describe(caught.value).party) == (400, "request")


@pytest.mark.parametrize("key", ["default\n", "ai-output\r\n", "\ndefault"])
def test_a_stream_key_with_a_newline_is_refused(key):
    with pytest.raises(ValueError, match="Invalid stream key"):
        validate_stream_key(key)


def test_no_ticket_is_made_for_an_id_with_a_newline():
    with pytest.raises(ValueError, match="Invalid run id"):
        make_ticket(user_pk=7, run_id="run_1\n", key="default")
    with pytest.raises(ValueError, match="Invalid stream key"):
        make_ticket(user_pk=7, run_id="run_1", key="default\n")


@pytest.mark.parametrize(
    "payload",
    [{"u": "7", "r": "run_1\n", "k": "default"}, {"u": "7", "r": "run_1", "k": "default\n"}],
)
def test_a_signed_ticket_for_an_id_with_a_newline_is_invalid(payload):
    # What the consumer checks on every subscribe: such a ticket is refused before any upstream
    # request (it used to pass and end in an in-band 500).
    with pytest.raises(TicketError, match="not valid") as caught:
        load_ticket(signing.dumps(payload, salt=TICKET_SALT, compress=True))
    assert describe(caught.value).status == 401


@pytest.mark.django_db(transaction=True)
async def test_a_subscribe_for_a_run_id_with_a_newline_is_refused_before_any_upstream_request(
    django_user_model, trigger_settings, emulator
):
    # A correctly signed ticket for "run_x\n" (what the run page used to render for
    # /runs/run_x%0A/): the subscribe used to reach upstream and answer an in-band 500.
    from asgiref.sync import sync_to_async
    from channels.auth import AuthMiddlewareStack
    from channels.routing import URLRouter
    from channels.testing import WebsocketCommunicator
    from django.conf import settings
    from django.test import Client

    from trigger_django.routing import websocket_urlpatterns
    from trigger_django.upstream import aclose_http_clients

    user = await django_user_model.objects.acreate(username="ada")
    client = Client()
    await sync_to_async(client.force_login)(user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    run_id, _ = emulator.trigger("echo-parts", {"parts": ["one"]})
    emulator.clear_requests()
    bad_run = run_id + "\n"
    ticket = signing.dumps(
        {"u": str(user.pk), "r": bad_run, "k": "default"}, salt=TICKET_SALT, compress=True
    )
    communicator = WebsocketCommunicator(
        AuthMiddlewareStack(URLRouter(websocket_urlpatterns)),
        "/trigger/ws/",
        headers=[(b"cookie", cookie.encode())],
    )
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    try:
        await communicator.send_json_to(
            {
                "type": "subscribe",
                "sub": "s1",
                "ticket": ticket,
                "run_id": bad_run,
                "key": "default",
            }
        )
        answer = await communicator.receive_output(timeout=5)
        # Refused before anything goes upstream: the message's own run id is malformed (4400;
        # the consumer matches ids whole), or, were it not, the ticket would be (in-band 401).
        if answer["type"] == "websocket.close":
            assert answer["code"] == 4400
        else:
            error = json.loads(answer["text"])
            assert error["type"] == "error"
            assert error["status"] == 401
        assert emulator.requests() == []
    finally:
        await communicator.disconnect()
        await aclose_http_clients()
