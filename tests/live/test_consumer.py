"""The consumer's costs and defences, each test reproducing the attack or fault it guards
against, with real sockets through the real auth middleware and a real emulator upstream."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgiref.sync import SyncToAsync, sync_to_async
from channels.layers import get_channel_layer
from django.contrib.sessions.models import Session
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.live.helpers import (
    collect,
    connect,
    consumer_tasks,
    expect_close,
    no_feeds,
    parts_of,
    pool_busy,
    session_cookie,
    stream_reads_for,
    subscribe_message,
    terminal,
    upstream_requests_for,
    wait_until,
)
from trigger_django.live import limits, sessions
from trigger_django.live.hub import get_hub
from trigger_django.live.protocol import MAX_SUBSCRIPTIONS
from trigger_django.upstream import aclose_http_clients

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
async def _close_shared_pool() -> AsyncIterator[None]:
    yield
    await aclose_http_clients()


@pytest.fixture
async def quiet_run(upstream: Any) -> str:
    run_id, _ = upstream.trigger("external-writer", {})  # open, and nothing is written
    return run_id


async def subscribed(communicator: Any, sub: str = "s1") -> dict[str, Any]:
    message = await communicator.receive_json_from(timeout=5)
    assert (message["type"], message["sub"]) == ("subscribed", sub), message
    return message


# -- costs ---------------------------------------------------------------------------------------


async def test_incoming_messages_cause_no_thread_hop(
    upstream: Any, user: Any, quiet_run: str, monkeypatch: Any
) -> None:
    communicator = await connect(user)
    await communicator.send_json_to(subscribe_message(user, quiet_run, timeout=30))
    await subscribed(communicator)
    hops: list[Any] = []
    original = SyncToAsync.__call__

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(self.func)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SyncToAsync, "__call__", counting)
    for n in range(100):
        await communicator.send_json_to({"type": "ack", "sub": f"gone{n}", "cursor": str(n)})
        await communicator.send_json_to({"type": "unsubscribe", "sub": f"gone{n}"})
    await communicator.send_json_to({"type": "unsubscribe", "sub": "s1"})
    # Processed in order: once the last one took effect, so had the 200 before it.
    await wait_until(lambda: not limits.live_by_user)
    assert hops == []
    monkeypatch.undo()
    await communicator.disconnect()


HOOK: dict[str, asyncio.Event] = {}


async def never_answers(user: Any, run_id: str, action: str) -> bool:
    HOOK["entered"].set()
    await asyncio.Event().wait()
    return True


async def test_a_disconnect_never_waits_behind_a_subscribe_being_checked(
    upstream: Any, user: Any, quiet_run: str, settings: Any
) -> None:
    settings.TRIGGER_DJANGO = {
        **settings.TRIGGER_DJANGO,
        "AUTHORIZE": "tests.live.test_consumer.never_answers",
    }
    HOOK["entered"] = asyncio.Event()
    communicator = await connect(user)
    await communicator.send_json_to(subscribe_message(user, quiet_run))
    await asyncio.wait_for(HOOK["entered"].wait(), 5)
    # Acks and unsubscribes are handled while the hook hangs ...
    await communicator.send_json_to({"type": "unsubscribe", "sub": "other"})
    # ... and the disconnect ends the socket at once, the check cancelled.
    await communicator.disconnect(timeout=2)
    await wait_until(lambda: consumer_tasks() == [])
    assert upstream_requests_for(upstream, quiet_run) == []


# -- sockets end with their session ----------------------------------------------------------------


async def test_a_subscribe_after_the_session_was_deleted_closes_the_socket_4401(
    upstream: Any, user: Any, quiet_run: str
) -> None:
    communicator = await connect(user)
    await sync_to_async(Session.objects.all().delete)()
    await communicator.send_json_to(subscribe_message(user, quiet_run))
    await expect_close(communicator, 4401)
    assert upstream_requests_for(upstream, quiet_run) == []


async def test_logging_out_closes_that_sessions_sockets_and_no_others(
    upstream: Any, user: Any, quiet_run: str
) -> None:
    client, cookie = await session_cookie(user)
    _, other_device = await session_cookie(user)
    streaming = await connect(user, cookie=cookie)
    idle = await connect(user, cookie=cookie)
    elsewhere = await connect(user, cookie=other_device)
    await streaming.send_json_to(subscribe_message(user, quiet_run, timeout=30))
    await subscribed(streaming)
    await sync_to_async(client.logout)()
    await expect_close(streaming, 4401)
    await expect_close(idle, 4401)
    assert await elsewhere.receive_nothing(timeout=0.2)
    await wait_until(lambda: not limits.live_by_user and consumer_tasks() == [])
    await elsewhere.disconnect()


async def test_a_logout_in_another_process_closes_the_socket_through_the_channel_layer(
    upstream: Any, user: Any
) -> None:
    _, cookie = await session_cookie(user)
    communicator = await connect(user, cookie=cookie)
    session_key = cookie.decode().split("=", 1)[1]
    layer = get_channel_layer()
    assert layer is not None
    # What the user_logged_out receiver of another daphne process sends.
    await layer.group_send(
        sessions.user_group(str(user.pk)),
        {"type": sessions.LOGOUT_EVENT, "session": sessions.session_digest("not this one")},
    )
    assert await communicator.receive_nothing(timeout=0.2)
    await layer.group_send(
        sessions.user_group(str(user.pk)),
        {"type": sessions.LOGOUT_EVENT, "session": sessions.session_digest(session_key)},
    )
    await expect_close(communicator, 4401)


# -- a closing socket runs nothing queued behind the close ---------------------------------------


async def test_nothing_queued_behind_a_malformed_message_runs(
    upstream: Any, user: Any, quiet_run: str
) -> None:
    communicator = await connect(user)
    await communicator.send_to(text_data="not json")
    for n in range(300):
        await communicator.send_json_to(subscribe_message(user, quiet_run, sub=f"s{n}"))
    await expect_close(communicator, 4400)
    await wait_until(lambda: communicator.input_queue.empty())
    assert await communicator.receive_nothing(timeout=0.2)
    assert consumer_tasks() == []
    assert upstream_requests_for(upstream, quiet_run) == []


# -- limits --------------------------------------------------------------------------------------


async def test_refused_subscribes_count_against_the_socket_rate(
    upstream: Any, user: Any, quiet_run: str, settings: Any
) -> None:
    settings.TRIGGER_DJANGO = {**settings.TRIGGER_DJANGO, "SUBSCRIBE_RATE_PER_SOCKET": 3}
    communicator = await connect(user)
    for n in range(3):
        forged = subscribe_message(user, quiet_run, sub=f"f{n}")
        forged["ticket"] = "forged"
        await communicator.send_json_to(forged)
        refusal = await communicator.receive_json_from(timeout=5)
        assert (refusal["sub"], refusal["status"]) == (f"f{n}", 401)
    await communicator.send_json_to(subscribe_message(user, quiet_run, sub="valid"))
    limited = await communicator.receive_json_from(timeout=5)
    assert (limited["type"], limited["sub"], limited["status"]) == ("error", "valid", 429)
    assert 0 < limited["retry_after"] <= 20
    assert f"try again in {limited['retry_after']:g} s" in limited["message"]
    assert upstream_requests_for(upstream, quiet_run) == []
    await communicator.disconnect()


async def test_the_user_rate_spans_sockets(
    upstream: Any, user: Any, quiet_run: str, settings: Any
) -> None:
    settings.TRIGGER_DJANGO = {**settings.TRIGGER_DJANGO, "SUBSCRIBE_RATE_PER_USER": 4}
    first, second = await connect(user), await connect(user)
    for communicator, sub in ((first, "a"), (first, "b"), (second, "c"), (second, "d")):
        await communicator.send_json_to(subscribe_message(user, quiet_run, sub=sub, timeout=30))
        await subscribed(communicator, sub)
    await second.send_json_to(subscribe_message(user, quiet_run, sub="e", timeout=30))
    limited = await second.receive_json_from(timeout=5)
    assert (limited["sub"], limited["status"]) == ("e", 429)
    assert "your account" in limited["message"]
    assert limited["retry_after"] > 0
    await first.disconnect()
    await second.disconnect()


async def test_past_the_subscriptions_per_socket_an_in_band_429(
    upstream: Any, user: Any, quiet_run: str, settings: Any
) -> None:
    settings.TRIGGER_DJANGO = {**settings.TRIGGER_DJANGO, "MAX_STREAMS_PER_USER": 1000}
    communicator = await connect(user)
    for n in range(MAX_SUBSCRIPTIONS):
        await communicator.send_json_to(subscribe_message(user, quiet_run, sub=f"s{n}", timeout=30))
    for n in range(MAX_SUBSCRIPTIONS):
        await subscribed(communicator, f"s{n}")
    await communicator.send_json_to(subscribe_message(user, quiet_run, sub="extra", timeout=30))
    limited = await communicator.receive_json_from(timeout=5)
    assert (limited["sub"], limited["status"]) == ("extra", 429)
    assert f"At most {MAX_SUBSCRIPTIONS} subscriptions per socket" in limited["message"]
    # All 64 ride one upstream read.
    reads = stream_reads_for(upstream, quiet_run)
    assert len(reads) == 1
    await communicator.disconnect()


# -- malformed input is a 4400, never a 1011 or a traceback --------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"run_id": "run_abc\n"},
        {"key": "default\n"},
        {"cursor": "3\n"},
        {"sub": "s1\n"},
        {"timeout": True},
        {"cursor": "1-2-3"},
    ],
)
async def test_ids_must_match_whole_a_trailing_newline_is_malformed(
    upstream: Any, user: Any, quiet_run: str, change: dict[str, Any], caplog: Any
) -> None:
    communicator = await connect(user)
    await communicator.send_json_to({**subscribe_message(user, quiet_run), **change})
    await expect_close(communicator, 4400)
    assert upstream_requests_for(upstream, quiet_run) == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_an_ack_cursor_with_a_trailing_newline_is_malformed(upstream: Any, user: Any) -> None:
    run_id, _ = upstream.trigger("echo-parts", {"parts": ["a"]})
    communicator = await connect(user)
    await communicator.send_json_to(subscribe_message(user, run_id, timeout=5))
    await collect(communicator, until=lambda m: m["type"] == "parts", ack=False)
    await communicator.send_json_to({"type": "ack", "sub": "s1", "cursor": "0\n"})
    await expect_close(communicator, 4400)


async def test_deeply_nested_json_is_a_malformed_message(
    upstream: Any, user: Any, caplog: Any
) -> None:
    communicator = await connect(user)
    await communicator.send_to(text_data="[" * 7000 + "]" * 7000)
    await expect_close(communicator, 4400)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    communicator = await connect(user)
    await communicator.send_to(text_data='{"type": "ack", "x": ' + "[" * 100_000)
    await expect_close(communicator, 4400)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=80),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = st.sampled_from(
    ["sub", "ticket", "run_id", "key", "timeout", "start_index", "cursor", "type"]
)
MESSAGES = st.one_of(
    st.text(max_size=200),
    JSON.map(json.dumps),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["subscribe", "unsubscribe", "ack", "bogus"])},
        optional={
            "sub": st.one_of(st.sampled_from(["s1", "s2", "s1\n", ""]), JSON),
            "cursor": st.one_of(st.sampled_from(["0", "1-0", "3\n", "99999999999999999999"]), JSON),
            "run_id": st.one_of(st.sampled_from(["run_x", "run_x\n", "../x"]), JSON),
            "key": st.one_of(st.sampled_from(["default", ".", "a..b", "k\n"]), JSON),
            "timeout": JSON,
            "start_index": JSON,
            "ticket": JSON,
        },
    )
    .flatmap(lambda base: st.dictionaries(FIELDS, JSON, max_size=2).map(lambda x: {**x, **base}))
    .map(json.dumps),
)


@pytest.fixture
async def cookie(user: Any) -> bytes:
    return (await session_cookie(user))[1]


@hypothesis_settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=st.lists(MESSAGES, min_size=1, max_size=3))
async def test_fuzzed_messages_get_a_4400_or_an_in_band_answer_never_a_1011(
    upstream: Any, user: Any, cookie: bytes, batch: list[str], caplog: Any
) -> None:
    caplog.clear()
    communicator = await connect(user, cookie=cookie)
    for text in batch:
        # send_input: the test helper refuses an empty frame, a browser can send one.
        await communicator.send_input({"type": "websocket.receive", "text": text})
    closed = None
    while not await communicator.receive_nothing(timeout=0.1):
        output = await communicator.receive_output(timeout=1)
        if output["type"] == "websocket.close":
            closed = output["code"]
            break
        message = json.loads(output["text"])
        assert message["type"] in ("subscribed", "error", "complete", "parts", "ticket")
        if message["type"] == "error":
            assert message["status"] in (401, 403, 404, 429), message
    assert closed in (None, 4400)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    await communicator.disconnect()
    await wait_until(
        lambda: consumer_tasks() == [] or all("feed" in t.get_name() for t in consumer_tasks())
    )


# -- churn: subscribe/unsubscribe pairs and instant closes leave nothing behind -------------------


async def test_subscribe_churn_and_instant_closes_leave_the_pool_idle(
    upstream: Any, user: Any, other_user: Any, settings: Any
) -> None:
    settings.TRIGGER_DJANGO = {
        **settings.TRIGGER_DJANGO,
        "SUBSCRIBE_RATE_PER_SOCKET": 10**6,
        "SUBSCRIBE_RATE_PER_USER": 10**6,
    }
    get_hub().linger = 0  # every unsubscribe cancels its read at once: the worst case
    runs = [upstream.trigger("external-writer", {})[0] for _ in range(8)]
    _, cookie = await session_cookie(user)
    communicator = await connect(user, cookie=cookie)
    for n in range(2000):
        sub = f"c{n}"
        await communicator.send_json_to(subscribe_message(user, runs[n % 8], sub=sub, timeout=30))
        if n % 4 == 0:  # every fourth waits for its read to start, the rest churn at once
            await subscribed(communicator, sub)
        await communicator.send_json_to({"type": "unsubscribe", "sub": sub})
    for n in range(500):
        page = await connect(user, cookie=cookie)
        await page.send_json_to(subscribe_message(user, runs[n % 8], sub="s1", timeout=30))
        await page.disconnect()
    await communicator.disconnect()
    await wait_until(lambda: consumer_tasks() == [] and no_feeds() and pool_busy() == 0, limit=30)
    assert not limits.live_by_user
    # Another user's stream still flows.
    chunks = [f"ok{i} " for i in range(20)]
    run_id, _ = upstream.trigger("echo-parts", {"parts": chunks})
    viewer = await connect(other_user)
    await viewer.send_json_to(subscribe_message(other_user, run_id))
    messages = await collect(viewer, until=terminal(), ack="requested")
    assert [p["chunk"] for p in parts_of(messages)] == chunks
    await viewer.disconnect()
