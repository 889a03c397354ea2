"""The stream consumer against a real emulator process, through the real auth middleware."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.core import signing
from django.test import Client

from trigger_django.client import verify_public_token
from trigger_django.consumers import (
    MAX_PARTS_PER_FRAME,
    MAX_SUBSCRIPTIONS,
    BadMessage,
    StreamConsumer,
    Subscription,
    cursor_key,
)
from trigger_django.routing import websocket_urlpatterns
from trigger_django.tickets import TICKET_SALT, Ticket, load_ticket, make_ticket
from trigger_django.upstream import aclose_http_clients, mint_public_token

pytestmark = pytest.mark.django_db(transaction=True)

WS_PATH = "/trigger/ws/"
application = AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
ALLOW_CALLS: list[tuple[Any, str, str]] = []


def deny_everything(user: Any, run_id: str, action: str) -> bool:
    return False


async def count_and_allow(user: Any, run_id: str, action: str) -> bool:
    ALLOW_CALLS.append((user.pk, run_id, action))
    return True


@pytest.fixture(autouse=True)
async def _close_shared_pool() -> AsyncIterator[None]:
    yield
    await aclose_http_clients()


@pytest.fixture
def upstream(trigger_settings: Any, emulator: Any) -> Any:
    return emulator


@pytest.fixture
async def user(django_user_model: Any) -> Any:
    return await django_user_model.objects.acreate(username="ada")


@pytest.fixture
async def other_user(django_user_model: Any) -> Any:
    return await django_user_model.objects.acreate(username="bob")


async def connect(user: Any | None) -> WebsocketCommunicator:
    headers = []
    if user is not None:
        client = Client()
        await sync_to_async(client.force_login)(user)
        cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    communicator = WebsocketCommunicator(application, WS_PATH, headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    return communicator


def subscribe_message(
    user: Any, run_id: str, key: str = "default", *, sub: str = "s1", **extra: Any
) -> dict[str, Any]:
    return {
        "type": "subscribe",
        "sub": sub,
        "ticket": make_ticket(user_pk=user.pk, run_id=run_id, key=key),
        "run_id": run_id,
        "key": key,
        "timeout": 1,
        **extra,
    }


async def expect_close(communicator: WebsocketCommunicator, code: int) -> None:
    message = await communicator.receive_output(timeout=5)
    assert message == {"type": "websocket.close", "code": code}


def upstream_requests_for(emulator: Any, run_id: str) -> list[dict[str, Any]]:
    return [r for r in emulator.requests() if run_id in r["path"]]


async def collect(
    communicator: WebsocketCommunicator,
    *,
    until: Callable[[dict[str, Any]], bool],
    ack: bool = True,
    limit: float = 10,
) -> list[dict[str, Any]]:
    """Receive messages (acking parts like the browser does) until ``until(message)``."""
    messages = []
    async with asyncio.timeout(limit):
        while True:
            message = await communicator.receive_json_from(timeout=limit)
            messages.append(message)
            if ack and message["type"] == "parts":
                for batch in message["streams"]:
                    await communicator.send_json_to(
                        {"type": "ack", "sub": batch["sub"], "cursor": batch["parts"][-1]["id"]}
                    )
            if until(message):
                return messages


def parts_of(messages: list[dict[str, Any]], sub: str = "s1") -> list[dict[str, Any]]:
    return [
        part
        for message in messages
        if message["type"] == "parts"
        for batch in message["streams"]
        if batch["sub"] == sub
        for part in batch["parts"]
    ]


def after_terminals(count: int) -> Callable[[dict[str, Any]], bool]:
    """Stop after ``count`` complete/error messages, whatever their subscriptions."""
    seen: list[dict[str, Any]] = []

    def until(message: dict[str, Any]) -> bool:
        if message["type"] in ("complete", "error"):
            seen.append(message)
        return len(seen) == count

    return until


def terminal(sub: str = "s1") -> Callable[[dict[str, Any]], bool]:
    return lambda m: m["type"] in ("complete", "error") and m.get("sub") == sub


async def wait_until(predicate: Callable[[], bool], limit: float = 5) -> None:
    # Task state has no event to wait on: poll it, bounded.
    async with asyncio.timeout(limit):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def consumer_tasks() -> list[asyncio.Task[Any]]:
    return [
        t
        for t in asyncio.all_tasks()
        if t.get_name().startswith("trigger_django:") and not t.done()
    ]


# -- refusals: closed with the right code, before anything goes upstream ------------------------


async def test_no_session_is_closed_4401(upstream: Any) -> None:
    communicator = await connect(None)
    await expect_close(communicator, 4401)


async def test_forged_ticket_is_closed_4401_before_any_upstream_request(
    upstream: Any, user: Any
) -> None:
    run_id, _ = upstream.trigger("echo-parts", {"parts": ["x"]})
    communicator = await connect(user)
    message = subscribe_message(user, run_id)
    message["ticket"] = message["ticket"][:-4] + "AAAA"
    await communicator.send_json_to(message)
    await expect_close(communicator, 4401)
    assert upstream_requests_for(upstream, run_id) == []


async def test_expired_ticket_is_closed_4401_before_any_upstream_request(
    upstream: Any, user: Any
) -> None:
    run_id, _ = upstream.trigger("echo-parts", {"parts": ["x"]})

    class PastSigner(signing.TimestampSigner):
        def timestamp(self) -> str:
            return signing.b62_encode(int(signing.time.time()) - 2 * 3600)

    communicator = await connect(user)
    message = subscribe_message(user, run_id)
    message["ticket"] = PastSigner(salt=TICKET_SALT).sign_object(
        {"u": str(user.pk), "r": run_id, "k": "default"}
    )
    await communicator.send_json_to(message)
    await expect_close(communicator, 4401)
    assert upstream_requests_for(upstream, run_id) == []


async def test_another_users_ticket_is_closed_4403_before_any_upstream_request(
    upstream: Any, user: Any, other_user: Any
) -> None:
    run_id, _ = upstream.trigger("echo-parts", {"parts": ["x"]})
    communicator = await connect(user)
    await communicator.send_json_to(subscribe_message(other_user, run_id))
    await expect_close(communicator, 4403)
    assert upstream_requests_for(upstream, run_id) == []


async def test_a_ticket_for_another_run_is_closed_4403_before_any_upstream_request(
    upstream: Any, user: Any
) -> None:
    allowed_run, _ = upstream.trigger("echo-parts", {"parts": ["x"]})
    target_run, _ = upstream.trigger("echo-parts", {"parts": ["secret"]})
    communicator = await connect(user)
    message = subscribe_message(user, allowed_run)
    message["run_id"] = target_run
    await communicator.send_json_to(message)
    await expect_close(communicator, 4403)
    assert upstream_requests_for(upstream, target_run) == []
    assert upstream_requests_for(upstream, allowed_run) == []


async def test_the_permission_hook_can_refuse_4403(upstream: Any, user: Any, settings: Any) -> None:
    settings.TRIGGER_DJANGO = {
        **settings.TRIGGER_DJANGO,
        "AUTHORIZE": "tests.test_consumers.deny_everything",
    }
    run_id, _ = upstream.trigger("echo-parts", {"parts": ["x"]})
    communicator = await connect(user)
    await communicator.send_json_to(subscribe_message(user, run_id))
    await expect_close(communicator, 4403)
    assert upstream_requests_for(upstream, run_id) == []


@pytest.mark.parametrize(
    "message",
    [
        "not json",
        '{"type": "dance"}',
        '{"type": "subscribe", "sub": "s1"}',
        '{"type": "ack", "sub": "s1"}',
        "[1, 2]",
    ],
)
async def test_malformed_messages_are_closed_4400(upstream: Any, user: Any, message: str) -> None:
    communicator = await connect(user)
    await communicator.send_to(text_data=message)
    await expect_close(communicator, 4400)


# -- streaming ----------------------------------------------------------------------------------


async def test_streams_every_part_then_completes_in_band(upstream: Any, user: Any) -> None:
    chunks = ["Hello", ", ", "world", {"n": 1}, 2]
    run_id, _ = upstream.trigger("echo-parts", {"parts": chunks})
    communicator = await connect(user)
    await communicator.send_json_to(subscribe_message(user, run_id))
    messages = await collect(communicator, until=terminal())
    assert messages[0] == {"type": "subscribed", "sub": "s1", "ticket": messages[0]["ticket"]}
    assert messages[-1] == {"type": "complete", "sub": "s1"}
    parts = parts_of(messages)
    assert [p["chunk"] for p in parts] == chunks
    assert [p["id"] for p in parts] == ["0", "1", "2", "3", "4"]
    # In-band end: the socket stays open for the browser to close.
    assert await communicator.receive_nothing(timeout=0.1)
    await communicator.disconnect()


async def test_reads_upstream_with_a_minted_token_scoped_to_the_run_only(
    upstream: Any, user: Any
) -> None:
    run_id, _ = upstream.trigger("echo-parts", {"parts": ["x"]})
    communicator = await connect(user)
    await communicator.send_json_to(subscribe_message(user, run_id))
    await collect(communicator, until=terminal())
    await communicator.disconnect()
    reads = [r for r in upstream_requests_for(upstream, run_id) if r["method"] == "GET"]
    assert reads
    assert all(r["jwt_scopes"] == [f"read:runs:{run_id}"] for r in reads)


async def test_a_carried_read_token_is_used_upstream(upstream: Any, user: Any) -> None:
    run_id, _ = upstream.trigger("echo-parts", {"parts": ["x"]})
    token, _ = await mint_public_token([f"read:runs:{run_id}"], ttl=600)
    communicator = await connect(user)
    message = subscribe_message(user, run_id)
    message["ticket"] = make_ticket(
        user_pk=user.pk, run_id=run_id, key="default", access_token=token
    )
    await communicator.send_json_to(message)
    assert [p["chunk"] for p in parts_of(await collect(communicator, until=terminal()))] == ["x"]
    await communicator.disconnect()


async def test_token_for_keeps_a_fresh_carried_token_and_replaces_a_stale_one(
    upstream: Any,
) -> None:
    consumer = StreamConsumer()
    fresh, _ = await mint_public_token(["read:runs:run_t"], ttl=600)
    stale, _ = await mint_public_token(["read:runs:run_t"], ttl=30)
    assert await consumer.token_for(Ticket("1", "run_t", "default", fresh)) == fresh
    replacement = await consumer.token_for(Ticket("1", "run_t", "default", stale))
    assert replacement not in (fresh, stale)
    assert verify_public_token(replacement, settings.TEST_TRIGGER_SECRET_KEY) == ["read:runs:run_t"]
    # Minted tokens are reused per run while they have time left.
    assert consumer.minted_tokens["run_t"][0] == replacement
    assert await consumer.token_for(Ticket("1", "run_t", "default", None)) == replacement


async def test_an_expired_upstream_token_is_re_minted_on_reconnect(
    upstream: Any, user: Any, settings: Any
) -> None:
    # Minted tokens live two seconds here (exp has whole seconds, so between one and two); the
    # upstream connection drops after about 2.8 s, so the reconnect presents an expired token,
    # gets 401 and must re-mint, and the new token outlives the retry's backoff.
    settings.TRIGGER_DJANGO = {**settings.TRIGGER_DJANGO, "PUBLIC_TOKEN_TTL": 2}
    parts = [f"p{i} " for i in range(34)]
    run_id, _ = upstream.trigger("echo-parts", {"parts": parts, "delay_ms": 100})
    upstream.inject_fault(run_id, "default", "drop", after=28)
    communicator = await connect(user)
    await communicator.send_json_to(subscribe_message(user, run_id))
    messages = await collect(communicator, until=terminal(), limit=20)
    await communicator.disconnect()

    assert messages[-1]["type"] == "complete"
    assert [p["chunk"] for p in parts_of(messages)] == parts
    reads = [r for r in upstream_requests_for(upstream, run_id) if r["method"] == "GET"]
    statuses = [r["status"] for r in reads]
    assert 401 in statuses, f"the reconnect should have met the expired token: {statuses}"
    assert statuses[statuses.index(401) + 1] == 200
    assert all(r["jwt_scopes"] == [f"read:runs:{run_id}"] for r in reads)


async def test_tickets_are_renewed_at_half_their_lifetime(
    upstream: Any, user: Any, settings: Any
) -> None:
    settings.TRIGGER_DJANGO = {**settings.TRIGGER_DJANGO, "TICKET_MAX_AGE": 2}
    run_id, _ = upstream.trigger("external-writer", {})  # an open run that stays quiet
    communicator = await connect(user)
    await communicator.send_json_to(subscribe_message(user, run_id, timeout=10))
    subscribed = await communicator.receive_json_from(timeout=5)
    assert subscribed["type"] == "subscribed"
    renewal = await communicator.receive_json_from(timeout=5)
    assert renewal["type"] == "ticket"
    assert renewal["sub"] == "s1"
    for fresh in (subscribed["ticket"], renewal["ticket"]):
        ticket = load_ticket(fresh)
        assert (ticket.user_pk, ticket.run_id, ticket.key) == (str(user.pk), run_id, "default")
    await communicator.disconnect()


async def test_a_user_past_the_live_stream_limit_gets_an_in_band_429(
    upstream: Any, user: Any, settings: Any
) -> None:
    settings.TRIGGER_DJANGO = {**settings.TRIGGER_DJANGO, "MAX_STREAMS_PER_USER": 2}
    run_id, _ = upstream.trigger("external-writer", {})  # an open run that stays quiet
    first, second = await connect(user), await connect(user)
    for communicator, sub in ((first, "a"), (first, "b")):
        await communicator.send_json_to(subscribe_message(user, run_id, sub=sub, timeout=30))
        assert (await communicator.receive_json_from(timeout=5))["type"] == "subscribed"
    # The limit is per user, across sockets: the third is refused in-band, nothing upstream.
    await asyncio.to_thread(
        upstream.wait_for, lambda: len(upstream_requests_for(upstream, run_id)) >= 2, 5
    )
    upstream.clear_requests()
    await second.send_json_to(subscribe_message(user, run_id, sub="c", timeout=30))
    refused = await second.receive_json_from(timeout=5)
    assert (refused["type"], refused["sub"], refused["status"]) == ("error", "c", 429)
    assert "at most 2" in refused["message"]
    assert upstream_requests_for(upstream, run_id) == []
    # Ending one frees a place.
    await first.send_json_to({"type": "unsubscribe", "sub": "a"})
    await wait_until(
        lambda: "trigger_django:upstream:a" not in {t.get_name() for t in consumer_tasks()}
    )
    await second.send_json_to(subscribe_message(user, run_id, sub="d", timeout=30))
    assert (await second.receive_json_from(timeout=5))["type"] == "subscribed"
    await first.disconnect()
    await second.disconnect()
    await wait_until(lambda: consumer_tasks() == [])


async def test_resumes_after_the_cursor_and_honours_start_index(upstream: Any, user: Any) -> None:
    run_id, _ = upstream.trigger("echo-parts", {"parts": list("abcdef")})
    communicator = await connect(user)
    await communicator.send_json_to(subscribe_message(user, run_id, sub="a", cursor="2"))
    await communicator.send_json_to(subscribe_message(user, run_id, sub="b", start_index=4))
    messages = await collect(
        communicator,
        until=after_terminals(2),
    )
    assert [p["chunk"] for p in parts_of(messages, "a")] == list("def")
    assert [p["chunk"] for p in parts_of(messages, "b")] == list("ef")
    await communicator.disconnect()


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    ALLOW_CALLS.clear()


async def test_v1_streams_resume_with_redis_ids(
    trigger_settings: Any, emulator_v1: Any, user: Any
) -> None:
    trigger_settings.TRIGGER_DJANGO = {
        **trigger_settings.TRIGGER_DJANGO,
        "API_URL": emulator_v1.url,
    }
    run_id, _ = emulator_v1.trigger("echo-parts", {"parts": list("abcd")})
    communicator = await connect(user)
    await communicator.send_json_to(subscribe_message(user, run_id))
    parts = parts_of(await collect(communicator, until=terminal()))
    assert [p["chunk"] for p in parts] == list("abcd")
    assert all("-" in p["id"] for p in parts)
    await communicator.send_json_to(
        subscribe_message(user, run_id, sub="s2", cursor=parts[1]["id"])
    )
    resumed = parts_of(await collect(communicator, until=terminal("s2")), "s2")
    assert [p["chunk"] for p in resumed] == list("cd")
    await communicator.disconnect()


async def test_upstream_404_is_an_in_band_error_and_the_socket_stays_open(
    upstream: Any, user: Any
) -> None:
    run_id, _ = upstream.trigger("echo-parts", {"parts": ["ok"]})
    communicator = await connect(user)
    await communicator.send_json_to(subscribe_message(user, "run_doesnotexist", sub="missing"))
    await communicator.send_json_to(subscribe_message(user, run_id, sub="fine"))
    messages = await collect(
        communicator,
        until=after_terminals(2),
    )
    error = next(m for m in messages if m["type"] == "error")
    assert error["sub"] == "missing"
    assert error["status"] == 404
    assert "run_doesnotexist" in error["message"]
    assert "404" in error["message"]
    assert [p["chunk"] for p in parts_of(messages, "fine")] == ["ok"]
    await communicator.disconnect()


async def test_two_viewers_share_one_socket(upstream: Any, user: Any) -> None:
    first, _ = upstream.trigger("echo-parts", {"parts": ["a1", "a2", "a3"]})
    second, _ = upstream.trigger("echo-parts", {"parts": ["b1", "b2"], "key": "other"})
    communicator = await connect(user)
    await communicator.send_json_to(subscribe_message(user, first, sub="one"))
    await communicator.send_json_to(subscribe_message(user, second, "other", sub="two"))
    messages = await collect(
        communicator,
        until=after_terminals(2),
    )
    assert [p["chunk"] for p in parts_of(messages, "one")] == ["a1", "a2", "a3"]
    assert [p["chunk"] for p in parts_of(messages, "two")] == ["b1", "b2"]
    await communicator.disconnect()


async def test_every_subscribe_calls_the_permission_hook(
    upstream: Any, user: Any, settings: Any
) -> None:
    settings.TRIGGER_DJANGO = {
        **settings.TRIGGER_DJANGO,
        "AUTHORIZE": "tests.test_consumers.count_and_allow",
    }
    run_id, _ = upstream.trigger("echo-parts", {"parts": ["x"]})
    for _ in range(2):  # a page load, then a reconnect
        communicator = await connect(user)
        await communicator.send_json_to(subscribe_message(user, run_id))
        await collect(communicator, until=terminal())
        await communicator.disconnect()
    assert [(user.pk, run_id, "read")] * 2 == ALLOW_CALLS


# -- coalescing and backpressure ----------------------------------------------------------------


async def test_a_burst_is_coalesced_into_fewer_frames(upstream: Any, user: Any) -> None:
    chunks = [f"t{i} " for i in range(300)]
    run_id, _ = upstream.trigger("echo-parts", {"parts": chunks})
    communicator = await connect(user)
    await communicator.send_json_to(subscribe_message(user, run_id))
    messages = await collect(communicator, until=terminal())
    frames = [m for m in messages if m["type"] == "parts"]
    assert [p["chunk"] for p in parts_of(messages)] == chunks
    assert len(frames) < len(chunks) / 10
    await communicator.disconnect()


async def test_leading_edge_first_part_goes_at_once_later_ones_are_coalesced(
    upstream: Any, user: Any, settings: Any
) -> None:
    # Parts 300 ms apart, all inside one 3 s window. A trailing-only throttle would send one
    # frame at the window's end; the leading edge sends what exists at once, then everything
    # that arrives during the window in exactly one more frame.
    settings.TRIGGER_DJANGO = {**settings.TRIGGER_DJANGO, "THROTTLE_MS": 3000}
    chunks = ["p0", "p1", "p2", "p3"]
    run_id, _ = upstream.trigger("echo-parts", {"parts": chunks, "delay_ms": 300})
    communicator = await connect(user)
    await communicator.send_json_to(subscribe_message(user, run_id, timeout=1))
    messages = await collect(communicator, until=terminal())
    frames = [[p["chunk"] for p in parts_of([m])] for m in messages if m["type"] == "parts"]
    assert len(frames) == 2
    assert frames[0][0] == "p0"
    assert frames[0] + frames[1] == chunks
    await communicator.disconnect()


async def test_backpressure_stops_after_max_unacked_parts(
    upstream: Any, user: Any, settings: Any
) -> None:
    settings.TRIGGER_DJANGO = {**settings.TRIGGER_DJANGO, "MAX_UNACKED_PARTS": 5}
    chunks = [f"c{i}" for i in range(20)]
    run_id, _ = upstream.trigger("echo-parts", {"parts": chunks})
    communicator = await connect(user)
    await communicator.send_json_to(subscribe_message(user, run_id, timeout=1))
    received: list[dict[str, Any]] = []
    await collect(
        communicator,
        ack=False,
        until=lambda m: len(received.__iadd__(parts_of([m])) or received) >= 5,
    )
    # Nothing more while nothing is acknowledged.
    assert await communicator.receive_nothing(timeout=0.5)
    assert len(received) == 5
    # Acknowledging lets it continue to the end, still never more than 5 ahead.
    await communicator.send_json_to({"type": "ack", "sub": "s1", "cursor": received[-1]["id"]})
    rest = await collect(communicator, until=terminal())
    assert [p["chunk"] for p in received + parts_of(rest)] == chunks
    await communicator.disconnect()


# -- no task left behind ------------------------------------------------------------------------


async def test_unsubscribe_and_disconnect_leave_no_task_running(upstream: Any, user: Any) -> None:
    slow = [f"w{i} " for i in range(100)]
    first, _ = upstream.trigger("echo-parts", {"parts": slow, "delay_ms": 100})
    second, _ = upstream.trigger("echo-parts", {"parts": slow, "delay_ms": 100})
    communicator = await connect(user)
    await communicator.send_json_to(subscribe_message(user, first, sub="one", timeout=30))
    await communicator.send_json_to(subscribe_message(user, second, sub="two", timeout=30))
    streaming: set[str] = set()

    def both_streaming(message: dict[str, Any]) -> bool:
        streaming.update(batch["sub"] for batch in message.get("streams", []))
        return streaming == {"one", "two"}

    await collect(communicator, until=both_streaming)
    assert {t.get_name() for t in consumer_tasks()} == {
        "trigger_django:flush",
        "trigger_django:renew",
        "trigger_django:upstream:one",
        "trigger_django:upstream:two",
    }
    await communicator.send_json_to({"type": "unsubscribe", "sub": "one"})
    await wait_until(
        lambda: "trigger_django:upstream:one" not in {t.get_name() for t in consumer_tasks()}
    )
    assert "trigger_django:upstream:two" in {t.get_name() for t in consumer_tasks()}
    await communicator.disconnect()
    await wait_until(lambda: consumer_tasks() == [])


# -- the documented stack -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "accepted"),
    [(b"http://evil.example", False), (b"http://127.0.0.1:8000", True)],
)
async def test_the_example_asgi_stack_checks_the_origin(origin: bytes, accepted: bool) -> None:
    from example_project.asgi import application as project_application

    communicator = WebsocketCommunicator(
        project_application, WS_PATH, headers=[(b"origin", origin)]
    )
    connected, _ = await communicator.connect(timeout=5)
    assert connected is accepted
    if accepted:  # then the session check: nobody is logged in
        await expect_close(communicator, 4401)


# -- cursors and acknowledgements (pure) --------------------------------------------------------


def test_cursor_order_is_numeric_for_v2_and_v1_ids() -> None:
    assert cursor_key("9") < cursor_key("10")
    assert cursor_key("99999999999999999999") > cursor_key("9999999999999999999")
    assert cursor_key("1735689600000-2") < cursor_key("1735689600000-10")
    assert cursor_key("1735689600000-10") < cursor_key("1735689600001-0")


def test_acknowledging_frees_the_window_frame_by_frame() -> None:
    subscription = Subscription("s1", Ticket("1", "run_1", "default", None), None, None, None)
    for last_id, count in (("4", 5), ("9", 5), ("12", 3)):
        subscription.in_flight.append((last_id, count))
        subscription.unacked += count
        subscription.last_sent = last_id
    subscription.acknowledge("3", window=10)  # inside the first frame: nothing freed yet
    assert (subscription.unacked, subscription.room.is_set()) == (13, False)
    subscription.acknowledge("9", window=10)
    assert (subscription.unacked, subscription.room.is_set()) == (3, True)
    subscription.acknowledge("12", window=10)
    assert subscription.unacked == 0
    assert not subscription.in_flight
    # An ack beyond what was sent would reopen the window without reading: refused.
    with pytest.raises(BadMessage, match="never sent"):
        subscription.acknowledge("13", window=10)


async def test_an_ack_for_a_part_never_sent_closes_the_socket_4400(
    upstream: Any, user: Any
) -> None:
    run_id, _ = upstream.trigger("echo-parts", {"parts": ["a", "b"]})
    communicator = await connect(user)
    await communicator.send_json_to(subscribe_message(user, run_id, timeout=5))
    await collect(communicator, until=lambda m: m["type"] == "parts", ack=False)
    await communicator.send_json_to({"type": "ack", "sub": "s1", "cursor": "9" * 20})
    await expect_close(communicator, 4400)


def test_the_docs_state_the_codes_and_limits_the_code_uses() -> None:
    docs = (Path(__file__).resolve().parents[1] / "docs" / "stream-viewer.md").read_text()
    for code in (4400, 4401, 4403, 4404, 1011, 1012, 1013):
        assert f"| {code}" in docs or f"/ {code} |" in docs, code
    assert f"At most {MAX_SUBSCRIPTIONS} subscriptions per socket" in docs
    assert f"at most {MAX_PARTS_PER_FRAME} parts per frame" in docs
    assert f"salt\n  `{TICKET_SALT}`" in docs or f"`{TICKET_SALT}`" in docs
    script = (
        Path(__file__).resolve().parents[1]
        / "trigger_django/static/trigger_django/trigger-django.js"
    ).read_text()
    retryable = script.split("RETRYABLE_CLOSE_CODES = [", 1)[1].split("]", 1)[0]
    assert {int(c) for c in retryable.split(",")} == {1001, 1005, 1006, 1011, 1012, 1013, 1014}
