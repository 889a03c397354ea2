"""Markdown rendered once per stream in the hub (``render: "markdown"``), through real sockets
and the emulator: token by token the page ends with ``render_markdown`` of the whole text, and
a late joiner, a viewer resuming from a cursor (from the replay buffer, from a catch-up read,
and on a process that never rendered the stream) end with exactly the same HTML."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.live.helpers import (
    collect,
    connect,
    no_feeds,
    parts_of,
    subscribe_message,
    terminal,
    wait_until,
)
from tests.markdown_corpus import ANSWERS
from trigger_django.live import hub as hub_module
from trigger_django.live import markdown as markdown_module
from trigger_django.live.markdown import chunk_text
from trigger_django.live.protocol import BadMessage, parse_message
from trigger_django.markdown import render_markdown
from trigger_django.upstream import aclose_http_clients

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
async def _close_shared_pool() -> AsyncIterator[None]:
    yield
    await aclose_http_clients()


class Page:
    """What trigger-django.js does with markdown parts (drawMarkdown), in Python."""

    def __init__(self) -> None:
        self.blocks: list[str] = []
        self.tail = ""
        self.seq = 0
        self.cursor: str | None = None

    def apply(self, parts: list[dict[str, Any]]) -> None:
        for part in parts:
            md = part["md"]
            assert md["n"] <= len(self.blocks), f"blocks missing: {md['n']} > {len(self.blocks)}"
            self.blocks.extend(md["append"][len(self.blocks) - md["n"] :])
            if md["seq"] >= self.seq:
                self.seq, self.tail = md["seq"], md["tail"]
            if not md.get("end"):
                self.cursor = part["id"]

    def copy(self) -> Page:
        other = Page()
        other.blocks, other.tail, other.seq, other.cursor = (
            list(self.blocks),
            self.tail,
            self.seq,
            self.cursor,
        )
        return other

    @property
    def html(self) -> str:
        return "".join(self.blocks) + self.tail


def tokens(text: str) -> list[str]:
    """Word-sized tokens, whitespace attached, as a model streams them."""
    return re.findall(r"\S+\s*|\s+", text)


def append_text(emulator: Any, run_id: str, chunks: list[str]) -> None:
    for chunk in chunks:
        response = emulator.client.post(
            f"/realtime/v1/streams/{run_id}/self/default/append", content=chunk.encode()
        )
        response.raise_for_status()


def markdown_subscribe(user: Any, run_id: str, **extra: Any) -> dict[str, Any]:
    return subscribe_message(user, run_id, render="markdown", **extra)


def test_the_subscribe_message_takes_render_markdown() -> None:
    message = parse_message(
        json.dumps({"type": "subscribe", "sub": "s1", "run_id": "run_1", "key": "default"})
    )
    assert not message.render_markdown  # type: ignore[union-attr]
    message = parse_message(
        json.dumps(
            {"type": "subscribe", "sub": "s1", "run_id": "run_1", "key": "k", "render": "markdown"}
        )
    )
    assert message.render_markdown  # type: ignore[union-attr]
    assert not message.render_parts  # type: ignore[union-attr]
    with pytest.raises(BadMessage, match="'render' must be 'parts' or 'markdown'"):
        parse_message(
            json.dumps(
                {"type": "subscribe", "sub": "s1", "run_id": "run_1", "key": "k", "render": "md"}
            )
        )


async def test_streamed_token_by_token_the_page_ends_with_the_whole_texts_rendering(
    upstream: Any, user: Any
) -> None:
    text = ANSWERS["overview"] + "\nAnd a last paragraph with an open **bold"
    # The task writes the answer token by token, then its run completes (and so the stream).
    run_id, _ = upstream.trigger("echo-parts", {"parts": tokens(text), "delay_ms": 2})
    viewer = await connect(user)
    await viewer.send_json_to(markdown_subscribe(user, run_id, timeout=30))
    assert (await viewer.receive_json_from(timeout=5))["type"] == "subscribed"
    messages = await collect(viewer, until=terminal(), limit=60)
    assert messages[-1] == {"type": "complete", "sub": "s1"}
    parts = parts_of(messages)
    assert "".join(p["chunk"] for p in parts if not p["md"].get("end")) == text
    page = Page()
    for part in parts:
        page.apply([part])
        # Every block is sent once, and only the server's sanitised HTML reaches the page.
        assert "<script" not in part["md"]["tail"]
    assert parts[-1]["md"]["end"] is True
    assert "chunk" not in parts[-1]
    assert page.html == render_markdown(text)
    # Frozen blocks went out once each: the appends add up to the blocks, no more.
    assert sum(len(p["md"]["append"]) for p in parts) == len(page.blocks)
    # While streaming the open ** was healed; at the end it is shown as written.
    assert "**bold" in page.tail
    assert "<strong>bold" not in page.tail
    await viewer.disconnect()


async def test_a_late_joiner_and_resumed_viewers_end_with_identical_html(
    upstream: Any, user: Any, monkeypatch: Any, settings: Any
) -> None:
    # The test writes the stream itself: it ends when idle, not with its (never run) run.
    settings.TRIGGER_DJANGO = {**settings.TRIGGER_DJANGO, "FOLLOW_RUNS": False}
    # A small replay buffer, so that the resume from the first half needs a catch-up read.
    monkeypatch.setattr(hub_module, "REPLAY_PARTS", 8)
    text = ANSWERS["overview"] + "\n" + ANSWERS["code"]
    chunks = tokens(text)
    half = len(chunks) // 2
    run_id, _ = upstream.trigger("external-writer", {})
    first = await connect(user)
    await first.send_json_to(markdown_subscribe(user, run_id, timeout=3))
    assert (await first.receive_json_from(timeout=5))["type"] == "subscribed"
    await asyncio.to_thread(append_text, upstream, run_id, chunks[:half])
    received: list[dict[str, Any]] = []
    async with asyncio.timeout(20):
        while len([p for p in received if not p["md"].get("end")]) < half:
            message = await first.receive_json_from(timeout=10)
            received += parts_of([message])
            if message["type"] == "parts":
                await first.send_json_to(
                    {"type": "ack", "sub": "s1", "cursor": message["streams"][0]["parts"][-1]["id"]}
                )
    page_first = Page()
    page_first.apply(received[: half // 4])
    early = page_first.copy()  # a viewer that saw a quarter, then dropped
    page_first.apply(received[half // 4 :])
    # A late joiner (no cursor) and a viewer resuming from the quarter mark.
    late, resumed = await connect(user), await connect(user)
    await late.send_json_to(markdown_subscribe(user, run_id, timeout=3))
    await resumed.send_json_to(markdown_subscribe(user, run_id, timeout=3, cursor=early.cursor))
    for communicator in (late, resumed):
        assert (await communicator.receive_json_from(timeout=5))["type"] == "subscribed"
    await asyncio.to_thread(append_text, upstream, run_id, chunks[half:])
    pages = {"late": Page(), "resumed": early.copy()}
    for name, communicator in (("late", late), ("resumed", resumed)):
        pages[name].apply(parts_of(await collect(communicator, until=terminal(), limit=30)))
    rest = parts_of(await collect(first, until=terminal(), limit=30))
    page_first.apply(rest)
    # The text as the stream gave it (a token that is JSON, like "2 ", arrives as a number).
    streamed = "".join(chunk_text(p["chunk"]) for p in received + rest if "chunk" in p)
    assert len(streamed) >= len(text)
    expected = render_markdown(streamed)
    assert page_first.html == expected
    assert pages["late"].html == expected
    assert pages["resumed"].html == expected
    # Every viewer left: the feed, and its rendering, go once it has lingered.
    await wait_until(no_feeds, limit=10)
    # A viewer resuming on a process that never rendered this stream (the feed is gone, as
    # after a deploy): the stream is read again from its start to rebuild the blocks.
    again = await connect(user)
    await again.send_json_to(markdown_subscribe(user, run_id, timeout=3, cursor=early.cursor))
    assert (await again.receive_json_from(timeout=5))["type"] == "subscribed"
    rebuilt = early.copy()
    rebuilt_parts = parts_of(await collect(again, until=terminal(), limit=30))
    assert rebuilt_parts
    assert int(rebuilt_parts[0]["id"]) > int(early.cursor or "0")
    rebuilt.apply(rebuilt_parts)
    assert rebuilt.html == expected
    for communicator in (first, late, resumed, again):
        await communicator.disconnect()


async def test_a_pathological_tail_renders_off_the_loop_and_stalls_no_other_stream(
    upstream: Any, user: Any, monkeypatch: Any
) -> None:
    """A flush with a huge open tail runs in a worker thread: while one is held there (it does
    not end until the test lets it), another stream's viewer gets its whole answer, and the
    held stream then ends with the right HTML."""
    giant = "**a" * 2_000  # one unterminated paragraph, far over INLINE_LIMIT
    entered, release = threading.Event(), threading.Event()
    state = {"timed_out": False, "loop_thread": False, "rendered": False}
    loop_thread = threading.get_ident()
    original = markdown_module._flush

    def held_flush(stream: Any, text: str) -> Any:
        if text == giant:
            state["loop_thread"] = threading.get_ident() == loop_thread
            entered.set()
            # Were this on the event loop, nothing could release it: it would time out.
            state["timed_out"] = not release.wait(10)
            update = original(stream, text)
            state["rendered"] = True
            return update
        return original(stream, text)

    monkeypatch.setattr(markdown_module, "_flush", held_flush)
    slow_run, _ = upstream.trigger("echo-parts", {"parts": ["# Slow\n\n", giant], "delay_ms": 2})
    slow = await connect(user)
    await slow.send_json_to(markdown_subscribe(user, slow_run, timeout=30))
    assert (await slow.receive_json_from(timeout=5))["type"] == "subscribed"
    assert await asyncio.to_thread(entered.wait, 10), "the giant tail was never rendered"

    text = ANSWERS["overview"]
    fast_run, _ = upstream.trigger("echo-parts", {"parts": tokens(text), "delay_ms": 1})
    fast = await connect(user)
    await fast.send_json_to(markdown_subscribe(user, fast_run, timeout=30))
    assert (await fast.receive_json_from(timeout=5))["type"] == "subscribed"
    fast_page = Page()
    fast_page.apply(parts_of(await collect(fast, until=terminal(), limit=30)))
    # The other stream was delivered whole while the slow render was still held.
    assert fast_page.html == render_markdown(text)
    assert not state["rendered"]
    release.set()
    slow_page = Page()
    slow_page.apply(parts_of(await collect(slow, until=terminal(), limit=30)))
    assert slow_page.html == render_markdown("# Slow\n\n" + giant)
    assert not state["loop_thread"]
    assert not state["timed_out"]
    await fast.disconnect()
    await slow.disconnect()
