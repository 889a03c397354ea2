"""Runs on the live path: run subscriptions shared per process, streams that follow their run,
object parts rendered on the server — against a real emulator, through real sockets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.live.helpers import (
    collect,
    connect,
    parts_of,
    subscribe_message,
    terminal,
    upstream_requests_for,
    wait_until,
)
from trigger_django.live import runs as live_runs
from trigger_django.tickets import RUN_WIDE, make_ticket
from trigger_django.upstream import aclose_http_clients

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
async def _close_shared_pool() -> AsyncIterator[None]:
    yield
    await aclose_http_clients()


def run_message(user: Any, run_id: str, *, sub: str = "r1", **extra: Any) -> dict[str, Any]:
    ticket = make_ticket(user_pk=user.pk, run_id=run_id, key=RUN_WIDE)
    return {"type": "subscribe", "feed": "run", "sub": sub, "ticket": ticket, "run_id": run_id}


def append(emulator: Any, run_id: str, chunk: Any, key: str = "default") -> None:
    body = chunk if isinstance(chunk, str) else json.dumps(chunk)
    response = emulator.client.post(
        f"/realtime/v1/streams/{run_id}/self/{key}/append", content=body.encode()
    )
    response.raise_for_status()


def control(emulator: Any, run_id: str, action: str, body: dict[str, Any]) -> None:
    response = emulator.client.post(f"/_emulator/runs/{run_id}/{action}", json=body)
    response.raise_for_status()


def snapshot_requests(emulator: Any, run_id: str) -> list[dict[str, Any]]:
    return [
        r
        for r in upstream_requests_for(emulator, run_id)
        if r["path"] == f"/realtime/v1/runs/{run_id}" and "offset=-1" in r.get("query", "")
    ]


def states(messages: list[dict[str, Any]], sub: str = "r1") -> list[dict[str, Any]]:
    return [part["chunk"] for part in parts_of(messages, sub)]


async def test_a_run_subscription_shows_every_state_to_completion(upstream: Any, user: Any) -> None:
    run_id, _ = upstream.trigger("demo-weather-agent", {"city": "Lisbon", "tokens_per_second": 50})
    socket = await connect(user)
    await socket.send_json_to(run_message(user, run_id))
    messages = await collect(socket, until=terminal("r1"), ack="requested", limit=30)
    assert messages[-1] == {"type": "complete", "sub": "r1"}
    seen = states(messages)
    final = seen[-1]
    assert final["status"] == "COMPLETED"
    assert final["label"] == "Completed"
    assert final["finished"]
    assert final["streams"] == ["openai"]
    assert final["progress"] == {"value": 1.0, "percent": 100, "step": "Done"}
    # States can be coalesced on the way (the page shows the newest), never reordered.
    values = [s["progress"]["value"] for s in seen if s["progress"]]
    assert len(seen) >= 2
    assert values == sorted(values)
    assert "payload" not in final
    assert "output" not in final
    await socket.disconnect()


async def test_a_stream_ticket_does_not_open_the_run(upstream: Any, user: Any) -> None:
    run_id, _ = upstream.trigger("echo-parts", {"parts": ["a"]})
    socket = await connect(user)
    message = run_message(user, run_id)
    message["ticket"] = make_ticket(user_pk=user.pk, run_id=run_id, key="default")
    await socket.send_json_to(message)
    [error] = await collect(socket, until=terminal("r1"))
    assert error["type"] == "error"
    assert error["status"] == 403
    await socket.disconnect()


async def test_a_hundred_viewers_of_one_run_make_one_run_subscription(
    upstream: Any, user: Any
) -> None:
    run_id, _ = upstream.trigger("external-writer", {})
    upstream.clear_requests()
    sockets = [await connect(user) for _ in range(4)]
    for n in range(100):
        await sockets[n % 4].send_json_to(run_message(user, run_id, sub=f"r{n}"))
    # Every viewer has the run's state...
    for socket in sockets:
        await collect(socket, until=lambda m: m["type"] == "parts", ack="requested", limit=15)
    control(upstream, run_id, "complete", {"output": None})
    for n, socket in enumerate(sockets):
        await collect(
            socket,
            until=lambda m, mine=n: m["type"] == "complete" and m["sub"] == f"r{96 + mine}",
            ack="requested",
            limit=15,
        )
    # ...from one subscription upstream: one snapshot, then its long polls.
    assert len(snapshot_requests(upstream, run_id)) == 1
    for socket in sockets:
        await socket.disconnect()


async def test_a_stream_completes_soon_after_its_run_not_after_the_idle_timeout(
    upstream: Any, user: Any
) -> None:
    run_id, _ = upstream.trigger("external-writer", {})
    socket = await connect(user)
    await socket.send_json_to(subscribe_message(user, run_id, timeout=120))
    append(upstream, run_id, "first ")
    await collect(socket, until=lambda m: m["type"] == "parts", ack="requested", limit=10)
    append(upstream, run_id, "last")
    control(upstream, run_id, "complete", {"output": None})
    loop = asyncio.get_running_loop()
    started = loop.time()
    messages = await collect(socket, until=terminal(), ack="requested", limit=30)
    assert messages[-1] == {"type": "complete", "sub": "s1"}
    assert "".join(p["chunk"] for p in parts_of(messages)).endswith("last")
    # Far sooner than the 120 s idle timeout: the run's end ended it (drained for 1 s).
    assert loop.time() - started < 30
    await socket.disconnect()


async def test_a_run_waiting_longer_than_the_timeout_still_shows_what_comes_after(
    upstream: Any, user: Any
) -> None:
    run_id, _ = upstream.trigger("external-writer", {})
    socket = await connect(user)
    await socket.send_json_to(subscribe_message(user, run_id, timeout=1))
    append(upstream, run_id, "before ")
    await collect(socket, until=lambda m: m["type"] == "parts", ack="requested", limit=10)
    control(upstream, run_id, "update", {"status": "WAITING_TO_RESUME"})
    # Three idle timeouts pass while the run waits: the viewer does not end.
    with pytest.raises(TimeoutError):
        await collect(socket, until=terminal(), ack="requested", limit=3.5)
    append(upstream, run_id, "after")
    control(upstream, run_id, "complete", {"output": None})
    messages = await collect(socket, until=terminal(), ack="requested", limit=30)
    assert messages[-1] == {"type": "complete", "sub": "s1"}
    assert [p["chunk"] for p in parts_of(messages)] == ["after"]
    await socket.disconnect()


async def test_a_failed_run_ends_its_streams_with_the_error_in_words(
    upstream: Any, user: Any
) -> None:
    run_id, _ = upstream.trigger("external-writer", {})
    socket = await connect(user)
    await socket.send_json_to(subscribe_message(user, run_id, timeout=60))
    append(upstream, run_id, "partial")
    await collect(socket, until=lambda m: m["type"] == "parts", ack="requested", limit=10)
    control(upstream, run_id, "fail", {"error": "The model went away"})
    messages = await collect(socket, until=terminal(), ack="requested", limit=30)
    error = messages[-1]
    assert error["type"] == "error"
    assert error["status"] == 409
    assert error["message"] == f"The run {run_id} ended: failed: The model went away."
    await socket.disconnect()


async def test_object_parts_are_rendered_once_on_the_server_in_order(
    upstream: Any, user: Any
) -> None:
    run_id, _ = upstream.trigger("demo-weather-agent", {"city": "Oslo", "tokens_per_second": 200})
    socket = await connect(user)
    ticket = make_ticket(
        user_pk=user.pk, run_id=run_id, key=RUN_WIDE, part_templates={RUN_WIDE: "weather/parts"}
    )
    message = subscribe_message(user, run_id, "openai", timeout=30, render="parts")
    message["ticket"] = ticket
    await socket.send_json_to(message)
    messages = await collect(socket, until=terminal(), ack="requested", limit=30)
    assert messages[-1] == {"type": "complete", "sub": "s1"}
    parts = parts_of(messages)
    kinds = ["html" if "html" in p else "text" for p in parts]
    first_html = kinds.index("html")
    assert set(kinds[:first_html]) == {"text"}
    assert kinds[first_html : first_html + 2] == [
        "html",
        "html",
    ]
    temperature = parts[first_html + 1]["chunk"]["result"]["temperature"]
    assert parts[first_html]["html"] == (
        '<p class="weather-call">Looking up the weather in Oslo…</p>'
    )
    assert parts[first_html + 1]["html"] == (
        f'<p class="weather-result">The weather in Oslo is {temperature} degrees.</p>'
    )
    answer = "".join(p["text"] for p in parts[first_html + 2 :])
    assert answer == f"The weather in Oslo is {temperature} degrees."
    await socket.disconnect()


async def test_render_parts_needs_part_templates_in_the_ticket(upstream: Any, user: Any) -> None:
    run_id, _ = upstream.trigger("echo-parts", {"parts": [{"type": "tool-call"}]})
    socket = await connect(user)
    await socket.send_json_to(subscribe_message(user, run_id, render="parts"))
    [error] = await collect(socket, until=terminal())
    assert error["status"] == 403
    assert "part templates" in error["message"]
    await socket.disconnect()


async def test_run_watches_stop_when_nobody_follows(upstream: Any, user: Any) -> None:
    run_id, _ = upstream.trigger("external-writer", {})
    socket = await connect(user)
    await socket.send_json_to(run_message(user, run_id))
    await collect(socket, until=lambda m: m["type"] == "parts", ack="requested", limit=10)
    assert run_id in live_runs._watches
    await socket.disconnect()
    await wait_until(lambda: run_id not in live_runs._watches, limit=10)


@pytest.mark.parametrize("render", ["text", "parts", "markdown"])
async def test_a_followed_stream_closes_its_upstream_read_when_its_viewers_leave(
    upstream: Any, user: Any, render: str
) -> None:
    # Rendered streams too: a transform left suspended would keep the read open for nobody.
    run_id, _ = upstream.trigger("external-writer", {})
    socket = await connect(user)
    message = subscribe_message(user, run_id, timeout=120)
    if render == "parts":
        message["render"] = "parts"
        message["ticket"] = make_ticket(
            user_pk=user.pk,
            run_id=run_id,
            key="default",
            part_templates={"default": "weather/parts"},
        )
    elif render == "markdown":
        message["render"] = "markdown"
    await socket.send_json_to(message)
    append(upstream, run_id, "one")
    await collect(socket, until=lambda m: m["type"] == "parts", ack="requested", limit=10)
    await socket.disconnect()

    def open_stream_reads() -> list[dict[str, Any]]:
        return [
            r
            for r in upstream_requests_for(upstream, run_id)
            if r["path"].startswith("/realtime/v1/streams/") and r.get("open")
        ]

    assert open_stream_reads()  # the read was open while the viewer watched
    await wait_until(lambda: not open_stream_reads(), limit=10)
