"""The stream consumer against a real emulator process, through the real auth middleware."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.core import signing

from tests.live.helpers import (
    after_terminals,
    collect,
    connect,
    consumer_tasks,
    expect_close,
    feed_readers,
    parts_of,
    stream_reads_for,
    subscribe_message,
    terminal,
    upstream_requests_for,
    wait_until,
)
from trigger_django.client import verify_public_token
from trigger_django.consumers import (
    MAX_PARTS_PER_FRAME,
    MAX_SUBSCRIPTIONS,
    BadMessage,
    Subscription,
    cursor_key,
)
from trigger_django.live import limits
from trigger_django.live.sources import minted_tokens, token_for
from trigger_django.live.subscription import Outlet
from trigger_django.tickets import TICKET_SALT, load_ticket, make_ticket
from trigger_django.upstream import aclose_http_clients, mint_public_token

pytestmark = pytest.mark.django_db(transaction=True)

WS_PATH = "/trigger/ws/"
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


async def expect_refusal(
    communicator: WebsocketCommunicator, status: int, sub: str = "s1"
) -> dict[str, Any]:
    """An in-band refusal of one subscription: the socket stays open for the others."""
    message = await communicator.receive_json_from(timeout=5)
    assert (message["type"], message["sub"], message["status"]) == ("error", sub, status)
    assert await communicator.receive_nothing(timeout=0.1)
    return message


# -- refusals: before anything goes upstream; in-band when they concern one subscription ---------


async def test_no_session_is_closed_4401(upstream: Any) -> None:
    communicator = await connect(None)
    await expect_close(communicator, 4401)


async def test_forged_ticket_is_refused_in_band_401_before_any_upstream_request(
    upstream: Any, user: Any
) -> None:
    run_id, _ = upstream.trigger("echo-parts", {"parts": ["x"]})
    communicator = await connect(user)
    message = subscribe_message(user, run_id)
    message["ticket"] = message["ticket"][:-4] + "AAAA"
    await communicator.send_json_to(message)
    refusal = await expect_refusal(communicator, 401)
    assert refusal["message"] == "The subscription ticket is not valid."
    assert upstream_requests_for(upstream, run_id) == []
    await communicator.disconnect()


async def test_expired_ticket_is_refused_in_band_401_before_any_upstream_request(
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
    refusal = await expect_refusal(communicator, 401)
    assert "expired" in refusal["message"]
    assert upstream_requests_for(upstream, run_id) == []
    await communicator.disconnect()


async def test_another_users_ticket_is_refused_in_band_403_before_any_upstream_request(
    upstream: Any, user: Any, other_user: Any
) -> None:
    run_id, _ = upstream.trigger("echo-parts", {"parts": ["x"]})
    communicator = await connect(user)
    await communicator.send_json_to(subscribe_message(other_user, run_id))
    refusal = await expect_refusal(communicator, 403)
    assert "another user" in refusal["message"]
    assert upstream_requests_for(upstream, run_id) == []
    await communicator.disconnect()


async def test_a_ticket_for_another_run_is_refused_in_band_403_before_any_upstream_request(
    upstream: Any, user: Any
) -> None:
    allowed_run, _ = upstream.trigger("echo-parts", {"parts": ["x"]})
    target_run, _ = upstream.trigger("echo-parts", {"parts": ["secret"]})
    communicator = await connect(user)
    message = subscribe_message(user, allowed_run)
    message["run_id"] = target_run
    await communicator.send_json_to(message)
    refusal = await expect_refusal(communicator, 403)
    assert "another run" in refusal["message"]
    assert upstream_requests_for(upstream, target_run) == []
    assert upstream_requests_for(upstream, allowed_run) == []
    await communicator.disconnect()


async def test_the_permission_hook_can_refuse_in_band_403(
    upstream: Any, user: Any, settings: Any
) -> None:
    settings.TRIGGER_DJANGO = {
        **settings.TRIGGER_DJANGO,
        "AUTHORIZE": "tests.test_consumers.deny_everything",
    }
    run_id, _ = upstream.trigger("echo-parts", {"parts": ["x"]})
    communicator = await connect(user)
    await communicator.send_json_to(subscribe_message(user, run_id))
    refusal = await expect_refusal(communicator, 403)
    assert refusal["message"] == f"You are not allowed to view run {run_id}."
    assert upstream_requests_for(upstream, run_id) == []
    await communicator.disconnect()


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
    reads = stream_reads_for(upstream, run_id)
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


async def test_tokens_are_minted_per_run_and_reused_until_near_expiry(upstream: Any) -> None:
    minted_tokens.clear()
    first = await token_for("run_t")
    assert verify_public_token(first, settings.TEST_TRIGGER_SECRET_KEY) == ["read:runs:run_t"]
    # Minted tokens are shared by every read of the run while they have time left.
    assert minted_tokens["run_t"][0] == first
    assert await token_for("run_t") == first
    # One near its expiry is replaced; `fresh` (a 401 upstream) always re-mints.
    stale, expires_at = await mint_public_token(["read:runs:run_t"], ttl=30)
    minted_tokens["run_t"] = (stale, expires_at)
    replacement = await token_for("run_t")
    assert replacement != stale
    assert verify_public_token(replacement, settings.TEST_TRIGGER_SECRET_KEY) == ["read:runs:run_t"]
    aged = minted_tokens["run_t"][1] - 10
    minted_tokens["run_t"] = (replacement, aged)
    await token_for("run_t", fresh=True)
    assert minted_tokens["run_t"][1] > aged


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
    reads = stream_reads_for(upstream, run_id)
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
    await asyncio.to_thread(upstream.wait_for, lambda: stream_reads_for(upstream, run_id), 5)
    upstream.clear_requests()
    await second.send_json_to(subscribe_message(user, run_id, sub="c", timeout=30))
    refused = await second.receive_json_from(timeout=5)
    assert (refused["type"], refused["sub"], refused["status"]) == ("error", "c", 429)
    assert "at most 2" in refused["message"]
    # No read of the stream (the run's own subscription, which the live ones follow, polls on).
    assert stream_reads_for(upstream, run_id) == []
    # Ending one frees a place.
    await first.send_json_to({"type": "unsubscribe", "sub": "a"})
    await wait_until(lambda: limits.live_by_user[str(user.pk)] == 1)
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
    # One shared reader per stream; the socket itself holds no task.
    assert feed_readers() == {
        f"trigger_django:feed:stream/{first}/default",
        f"trigger_django:feed:stream/{second}/default",
    }
    await communicator.send_json_to({"type": "unsubscribe", "sub": "one"})
    # The reader of a stream nobody watches stops (after a short linger).
    await wait_until(lambda: f"trigger_django:feed:stream/{first}/default" not in feed_readers())
    assert f"trigger_django:feed:stream/{second}/default" in feed_readers()
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


def _outlet(window_parts: int = 10, budget: int = 10_000) -> Outlet:
    return Outlet(
        send=None,  # type: ignore[arg-type]
        window_parts=window_parts,
        budget=budget,
        on_finished=lambda s: None,
        schedule=lambda o: None,
    )


def test_acknowledging_frees_the_window_frame_by_frame() -> None:
    from trigger_django.live.subscription import Segment

    outlet = _outlet()
    subscription = Subscription("s1", outlet, timeout=1)
    outlet.subscriptions["s1"] = subscription
    for first, last, count in ((0, 4, 5), (5, 9, 5), (10, 12, 3)):
        parts = [f'{{"id":"{n}"}}' for n in range(first, last + 1)]
        subscription.enqueue(Segment(parts, 10 * count, (first, 0), (last, 0), str(last), None))
        subscription.take()
    assert (subscription.unacked_parts, subscription.has_room()) == (13, False)
    assert outlet.outstanding_size == 130
    subscription.acknowledge("3")  # inside the first frame: nothing freed yet
    assert (subscription.unacked_parts, subscription.has_room()) == (13, False)
    subscription.acknowledge("9")
    assert (subscription.unacked_parts, subscription.has_room()) == (3, True)
    assert outlet.outstanding_size == 30
    subscription.acknowledge("12")
    assert subscription.unacked_parts == 0
    assert outlet.outstanding_size == 0
    assert not subscription.in_flight
    # An ack beyond what was sent would reopen the window without reading: refused.
    with pytest.raises(BadMessage, match="never sent"):
        subscription.acknowledge("13")


def test_the_server_asks_for_acks_a_few_times_per_window_not_per_batch() -> None:
    from trigger_django.live.subscription import Segment

    outlet = _outlet(window_parts=100, budget=10**9)
    subscription = Subscription("s1", outlet, timeout=1)
    asked = []
    for n in range(100):
        subscription.enqueue(Segment([f'{{"id":"{n}"}}'], 10, (n, 0), (n, 0), str(n), None))
        _, ask = subscription.take()  # type: ignore[misc]
        asked.append(ask)
        if ask:
            subscription.acknowledge(str(n))
    # A quarter of the window between requests: 4 acks for 100 batches.
    assert [n for n, ask in enumerate(asked) if ask] == [24, 49, 74, 99]


def test_a_socket_past_half_its_byte_budget_asks_for_every_batch() -> None:
    from trigger_django.live.subscription import Segment

    outlet = _outlet(window_parts=10**6, budget=1000)
    subscription = Subscription("s1", outlet, timeout=1)
    asks = []
    for n in range(9):
        subscription.enqueue(Segment([f'"{n}"'], 100, (n, 0), (n, 0), str(n), None))
        asks.append(subscription.take()[1])  # type: ignore[index]
    # Every eighth of the budget (two batches here) asks; from half the budget on, every batch.
    assert asks == [False, True, False, True, True, True, True, True, True]
    assert subscription.has_room()
    subscription.enqueue(Segment(['"9"'], 100, (9, 0), (9, 0), "9", None))
    assert not subscription.has_room()


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
