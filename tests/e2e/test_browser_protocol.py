"""The browser client's side of the WebSocket protocol, against a scripted socket in Chromium.

A fake ``WebSocket`` (installed before the page's script runs) records what the page sends and
lets the test play the server, so protocol edge cases that a real upstream produces only by
chance can be staged exactly.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from playwright.async_api import expect

from bench.stack import Daphne
from tests.e2e.conftest import own_run

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

FAKE_SOCKET = """
window.__fake = {sockets: []};
(function () {
  function FakeSocket(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    window.__fake.sockets.push(this);
    var self = this;
    setTimeout(function () { self.readyState = 1; self.onopen && self.onopen({}); }, 0);
  }
  FakeSocket.prototype.send = function (data) {
    var message = JSON.parse(data);
    // Only the stream viewer's side is played here: the page's run badge and approval form
    // subscribe to the run as well (feed "run"); those are left unanswered.
    if (message.feed !== "run") { this.sent.push(message); }
  };
  FakeSocket.prototype.close = function (code) {
    this.readyState = 3;
    this.onclose && this.onclose({code: code || 1000});
  };
  FakeSocket.CONNECTING = 0; FakeSocket.OPEN = 1; FakeSocket.CLOSING = 2; FakeSocket.CLOSED = 3;
  window.WebSocket = FakeSocket;
  // The test plays the server through these.
  window.__fake.receive = function (n, message) {
    var socket = window.__fake.sockets[n];
    socket.onmessage({data: JSON.stringify(message)});
  };
  window.__fake.drop = function (n) {
    var socket = window.__fake.sockets[n];
    socket.readyState = 3;
    socket.onclose({code: 1006});
  };
})();
"""

OUTPUT = "[data-trigger-stream] [data-trigger-output]"


async def sent(page: Any, socket: int) -> list[dict[str, Any]]:
    return await page.evaluate(f"window.__fake.sockets[{socket}].sent")


async def play(page: Any, socket: int, message: dict[str, Any]) -> None:
    await page.evaluate(f"window.__fake.receive({socket}, {json.dumps(message)})")


@pytest.fixture
async def scripted_page(page: Any, daphne_server: Daphne, e2e_user: Any) -> Any:
    own_run("run_scripted", e2e_user)
    await page.add_init_script(FAKE_SOCKET)
    await page.goto(f"{daphne_server.url}/runs/run_scripted/?timeout=5&render=text")
    await page.wait_for_function("() => window.__fake.sockets.length === 1")
    await page.wait_for_function("() => window.__fake.sockets[0].sent.length === 1")
    return page


async def test_a_v1_entry_cut_by_a_reconnect_is_replayed_whole_and_applied_once(
    scripted_page: Any,
) -> None:
    page = scripted_page
    (subscribe,) = await sent(page, 0)
    assert subscribe["type"] == "subscribe"
    assert subscribe["cursor"] is None
    sub = subscribe["sub"]
    await play(page, 0, {"type": "subscribed", "sub": sub})
    # Entry 100-0 holds one line, entry 200-0 three; the socket drops after two of them.
    await play(
        page,
        0,
        {
            "type": "parts",
            "streams": [
                {
                    "sub": sub,
                    "parts": [
                        {"id": "100-0", "chunk": "A ", "timestamp": 100},
                        {"id": "200-0", "chunk": "B1 ", "timestamp": 200},
                        {"id": "200-0", "chunk": "B2 ", "timestamp": 200, "i": 1},
                    ],
                }
            ],
        },
    )
    await expect(page.locator(OUTPUT)).to_have_text("A B1 B2 ")
    await page.evaluate("window.__fake.drop(0)")
    await page.wait_for_function("() => window.__fake.sockets.length === 2", timeout=10_000)
    await page.wait_for_function("() => window.__fake.sockets[1].sent.length === 1")

    (resubscribe,) = await sent(page, 1)
    # Resumes after the entry before the cut one, so the rest of entry 200-0 is not lost.
    assert resubscribe["cursor"] == "100-0"
    sub = resubscribe["sub"]
    await play(page, 1, {"type": "subscribed", "sub": sub})
    await play(
        page,
        1,
        {
            "type": "parts",
            "streams": [
                {
                    "sub": sub,
                    "parts": [
                        {"id": "200-0", "chunk": "B1 ", "timestamp": 200},
                        {"id": "200-0", "chunk": "B2 ", "timestamp": 200, "i": 1},
                        {"id": "200-0", "chunk": "B3 ", "timestamp": 200, "i": 2},
                        {"id": "300-0", "chunk": "C", "timestamp": 300},
                    ],
                }
            ],
        },
    )
    await expect(page.locator(OUTPUT)).to_have_text("A B1 B2 B3 C")


async def test_v2_resumes_right_after_the_last_applied_part(scripted_page: Any) -> None:
    page = scripted_page
    (subscribe,) = await sent(page, 0)
    sub = subscribe["sub"]
    await play(page, 0, {"type": "subscribed", "sub": sub})
    parts = [{"id": str(n), "chunk": f"p{n} ", "timestamp": n} for n in range(3)]
    await play(page, 0, {"type": "parts", "streams": [{"sub": sub, "parts": parts[:2]}]})
    await play(
        page, 0, {"type": "parts", "streams": [{"sub": sub, "parts": parts[2:], "ack": True}]}
    )
    await expect(page.locator(OUTPUT)).to_have_text("p0 p1 p2 ")
    # Only the batch the server marked is acknowledged, once applied.
    await page.wait_for_function("() => window.__fake.sockets[0].sent.length === 2")
    acks = [m for m in await sent(page, 0) if m["type"] == "ack"]
    assert acks == [{"type": "ack", "sub": sub, "cursor": "2"}]
    await page.evaluate("window.__fake.drop(0)")
    await page.wait_for_function("() => window.__fake.sockets.length === 2", timeout=10_000)
    await page.wait_for_function("() => window.__fake.sockets[1].sent.length === 1")
    assert (await sent(page, 1))[0]["cursor"] == "2"


async def test_a_renewed_ticket_is_used_for_the_next_subscribe(scripted_page: Any) -> None:
    page = scripted_page
    (subscribe,) = await sent(page, 0)
    sub = subscribe["sub"]
    await play(page, 0, {"type": "subscribed", "sub": sub, "ticket": "renewed-at-subscribe"})
    await play(page, 0, {"type": "ticket", "sub": sub, "ticket": "renewed-later"})
    await page.evaluate("window.__fake.drop(0)")
    await page.wait_for_function("() => window.__fake.sockets.length === 2", timeout=10_000)
    await page.wait_for_function("() => window.__fake.sockets[1].sent.length === 1")
    assert (await sent(page, 1))[0]["ticket"] == "renewed-later"


async def test_batches_are_acknowledged_only_when_the_server_asks(scripted_page: Any) -> None:
    page = scripted_page
    (subscribe,) = await sent(page, 0)
    sub = subscribe["sub"]
    await play(page, 0, {"type": "subscribed", "sub": sub})
    for n in range(5):
        part = {"id": str(n), "chunk": f"p{n} ", "timestamp": n}
        await play(page, 0, {"type": "parts", "streams": [{"sub": sub, "parts": [part]}]})
    await expect(page.locator(OUTPUT)).to_have_text("p0 p1 p2 p3 p4 ")
    assert [m["type"] for m in await sent(page, 0)] == ["subscribe"]
    part = {"id": "5", "chunk": "p5", "timestamp": 5}
    await play(page, 0, {"type": "parts", "streams": [{"sub": sub, "parts": [part], "ack": True}]})
    await page.wait_for_function("() => window.__fake.sockets[0].sent.length === 2")
    assert (await sent(page, 0))[1] == {"type": "ack", "sub": sub, "cursor": "5"}


async def test_a_re_sent_v2_record_after_a_resume_is_applied_once(scripted_page: Any) -> None:
    page = scripted_page
    (subscribe,) = await sent(page, 0)
    sub = subscribe["sub"]
    await play(page, 0, {"type": "subscribed", "sub": sub})
    first = [{"id": "0", "chunk": "a ", "timestamp": 0}, {"id": "1", "chunk": None, "timestamp": 1}]
    await play(page, 0, {"type": "parts", "streams": [{"sub": sub, "parts": first}]})
    await expect(page.locator(OUTPUT)).to_have_text("a null\n")
    await page.evaluate("window.__fake.drop(0)")
    await page.wait_for_function("() => window.__fake.sockets.length === 2", timeout=10_000)
    await page.wait_for_function("() => window.__fake.sockets[1].sent.length === 1")
    (resubscribe,) = await sent(page, 1)
    assert resubscribe["cursor"] == "1"
    sub = resubscribe["sub"]
    await play(page, 1, {"type": "subscribed", "sub": sub})
    # The record at the cursor comes again, numbered as a repeat: still the same v2 record.
    again = [
        {"id": "1", "chunk": None, "timestamp": 1, "i": 1},
        {"id": "2", "chunk": "b", "timestamp": 2},
    ]
    await play(page, 1, {"type": "parts", "streams": [{"sub": sub, "parts": again}]})
    await expect(page.locator(OUTPUT)).to_have_text("a null\nb")


async def test_a_rate_limited_subscribe_waits_and_retries_only_that_viewer(
    scripted_page: Any,
) -> None:
    page = scripted_page
    (subscribe,) = await sent(page, 0)
    sub = subscribe["sub"]
    viewer = page.locator("[data-trigger-stream]")
    await play(
        page,
        0,
        {
            "type": "error",
            "sub": sub,
            "status": 429,
            "message": "Too many subscriptions started from this page: try again in 0.2 s.",
            "retry_after": 0.2,
        },
    )
    await expect(viewer).to_have_attribute("data-state", "reconnecting")
    await page.wait_for_function("() => window.__fake.sockets[0].sent.length === 2")
    retry = (await sent(page, 0))[1]
    assert (retry["type"], retry["sub"]) == ("subscribe", sub)
    await play(page, 0, {"type": "subscribed", "sub": sub})
    await expect(viewer).to_have_attribute("data-state", "live")


async def test_an_in_band_refusal_fails_only_that_viewer(scripted_page: Any) -> None:
    page = scripted_page
    (subscribe,) = await sent(page, 0)
    sub = subscribe["sub"]
    await play(
        page,
        0,
        {
            "type": "error",
            "sub": sub,
            "status": 403,
            "message": "You are not allowed to view run x.",
        },
    )
    viewer = page.locator("[data-trigger-stream]")
    await expect(viewer).to_have_attribute("data-state", "error")
    await expect(page.locator("[data-trigger-stream] [data-trigger-error]")).to_have_text(
        "You are not allowed to view run x."
    )
    # The socket is the page's, not the viewer's: nothing closed it for this refusal.
    assert await page.evaluate("window.__fake.sockets.length") == 1
