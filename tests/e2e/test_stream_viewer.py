"""{% stream_viewer %} in Chromium: live text, states, and recovery from faults on both sides."""

from __future__ import annotations

import html
import itertools
import json
import os
import re
from typing import Any

import pytest
from playwright.async_api import expect

from bench.stack import Daphne
from tests.e2e.conftest import E2E_PASSWORD, E2E_USER, ROOT, artifact, own_run
from trigger_django.emulator.tasks import demo_answer_text, demo_answer_tokens
from trigger_django.markdown import render_markdown
from trigger_django.tickets import make_ticket

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

VIEWER = "[data-trigger-stream]"
OUTPUT = "[data-trigger-stream] [data-trigger-output]"
OUTPUT_LENGTH_AT_LEAST = f"(n) => document.querySelector('{OUTPUT}').textContent.length >= n"
# The markdown viewer's HTML: its frozen blocks, then its tail.
OUTPUT_HTML_IS = (
    f"(html) => [...document.querySelector('{OUTPUT}').children].map((c) => c.innerHTML)"
    ".join('') === html"
)


def start_demo_run(emulator: Any, prompt: str, tokens_per_second: float) -> tuple[str, str]:
    # The run completes once the answer is out (no approval step): its viewer completes then.
    run_id, _ = emulator.trigger(
        "demo-ai-writer",
        {"prompt": prompt, "tokens_per_second": tokens_per_second, "await_approval": False},
    )
    return run_id, "".join(demo_answer_tokens(prompt))


def rendered_demo_answer(prompt: str) -> str:
    """The demo answer's markdown as the viewer must show it (its blocks' and tail's HTML),
    rendered on the server by markdown-it-py and sanitised by nh3."""
    heading, _, items, _ = demo_answer_text(prompt).split("\n\n")
    assert heading.startswith("## ")
    assert items.startswith("- ")
    rendered = render_markdown(demo_answer_text(prompt))
    assert rendered.startswith(f"<h2>{html.escape(heading[3:], quote=False)}</h2>\n<p>")
    assert "<ul>\n<li>" in rendered
    return rendered


def initial_parts(body: str) -> int:
    """Parts the page's first HTML already held (data-parts, 0 without any)."""
    match = re.search(r'data-parts="(\d+)"', body)
    return int(match.group(1)) if match else 0


async def recorded(page: Any) -> dict[str, Any]:
    return await page.evaluate("window.__viewer")


def assert_growing(texts: list[str], final: str) -> None:
    distinct = list(dict.fromkeys(texts))
    assert len(distinct) >= 3, f"expected at least three growing states, saw {len(distinct)}"
    for shorter, longer in itertools.pairwise(distinct):
        assert longer.startswith(shorter)
        assert len(longer) > len(shorter)
    assert final.startswith(distinct[-1])


async def test_text_streams_in_and_completes(
    page: Any, daphne_server: Daphne, emulator: Any
) -> None:
    # ~70 tokens over 3.5 s: still streaming when the page subscribes, even on a loaded machine
    # (page load and subscribe measured at 2 s under a load of 9 on 2 cores).
    run_id, answer = start_demo_run(emulator, "live pages in Django", tokens_per_second=20)
    response = await page.goto(f"{daphne_server.url}/runs/{run_id}/?timeout=1&render=text")
    # The first HTML holds what was written by then; the socket brings the rest.
    held = initial_parts(await response.text())
    viewer = page.locator(VIEWER)
    await expect(viewer).to_have_attribute("data-state", "complete", timeout=20_000)
    assert await page.locator(OUTPUT).text_content() == answer
    record = await recorded(page)
    assert record["states"] == ["connecting>live", "live>complete"]
    assert_growing(record["texts"], answer)
    # One `trigger:data` per part the socket brought (the hook's onData), one
    # `trigger:complete` at the end.
    assert record["chunks"] == demo_answer_tokens("live pages in Django")[held:]
    assert [event["runId"] for event in record["completes"]] == [run_id]
    # The example project serves a strict CSP; the viewer runs without breaking it.
    assert "script-src 'self' 'nonce-" in (await response.all_headers())["content-security-policy"]
    assert record["violations"] == []
    await page.screenshot(path=artifact("stream-viewer-complete.png"), full_page=True)


async def test_upstream_drop_mid_stream_loses_and_repeats_nothing(
    page: Any, daphne_server: Daphne, emulator: Any
) -> None:
    run_id, answer = start_demo_run(emulator, "surviving dropped connections", 60)
    emulator.inject_fault(run_id, "ai-output", "drop", after=15)
    await page.goto(f"{daphne_server.url}/runs/{run_id}/?timeout=1&render=text")
    await expect(page.locator(VIEWER)).to_have_attribute("data-state", "complete", timeout=20_000)
    assert await page.locator(OUTPUT).text_content() == answer
    reads = [
        r
        for r in emulator.requests()
        if r["method"] == "GET" and r["path"] == f"/realtime/v1/streams/{run_id}/ai-output"
    ]
    assert len(reads) >= 2, "the fault should have forced a reconnect upstream"
    assert any("last-event-id" in {k.lower() for k in r["headers"]} for r in reads[1:])


async def test_daphne_restart_mid_stream_resumes_to_the_exact_text(
    page: Any, daphne_server: Daphne, emulator: Any
) -> None:
    run_id, answer = start_demo_run(emulator, "restarting the server mid-answer", 15)
    await page.goto(f"{daphne_server.url}/runs/{run_id}/?timeout=2&render=text")
    viewer = page.locator(VIEWER)
    await expect(viewer).to_have_attribute("data-state", "live", timeout=10_000)
    await page.wait_for_function(OUTPUT_LENGTH_AT_LEAST, arg=40, timeout=10_000)
    daphne_server.kill()
    await expect(viewer).to_have_attribute("data-state", "reconnecting", timeout=10_000)
    daphne_server.start()  # same port
    await expect(viewer).to_have_attribute("data-state", "complete", timeout=30_000)
    assert await page.locator(OUTPUT).text_content() == answer
    record = await recorded(page)
    assert "live>reconnecting" in record["states"]
    assert "reconnecting>live" in record["states"]
    assert record["states"][-1] == "live>complete"


async def test_upstream_404_shows_its_message(
    page: Any, daphne_server: Daphne, e2e_user: Any
) -> None:
    own_run("run_doesnotexist", e2e_user)  # recorded here, unknown to Trigger.dev
    await page.goto(f"{daphne_server.url}/runs/run_doesnotexist/?timeout=1")
    viewer = page.locator(VIEWER)
    await expect(viewer).to_have_attribute("data-state", "error", timeout=10_000)
    error = page.locator("[data-trigger-stream] [data-trigger-error]")
    await expect(error).to_be_visible()
    await expect(error).to_contain_text("404")
    await expect(error).to_contain_text("run_doesnotexist")
    await expect(page.locator("[data-trigger-stream] [data-trigger-status]")).to_be_hidden()
    await page.screenshot(path=artifact("stream-viewer-404.png"))


async def test_demo_log_in_write_with_ai_and_watch(
    browser: Any, daphne_server: Daphne, e2e_user: Any
) -> None:
    context = await browser.new_context(viewport={"width": 900, "height": 640})
    page = await context.new_page()
    try:
        await page.goto(f"{daphne_server.url}/")
        await page.fill("input[name=username]", E2E_USER)
        await page.fill("input[name=password]", E2E_PASSWORD)
        await page.click("button[type=submit]")
        prompt = "How do I stream AI answers into Django pages?"
        await page.fill("input[name=prompt]", prompt)
        await page.click("text=Write with AI")
        await page.wait_for_url(f"{daphne_server.url}/runs/run_*/")
        # The run page renders the answer as markdown (render="markdown").
        answer_html = rendered_demo_answer(prompt)
        await page.wait_for_function(OUTPUT_HTML_IS, arg=answer_html, timeout=30_000)
        assert await page.locator(f"{OUTPUT} h2").text_content() == prompt
        await expect(page.locator(VIEWER)).to_have_attribute("data-state", "live")
        await page.screenshot(path=artifact("demo-run.png"), full_page=True)
        # The README's picture: refreshed on request only, so test runs leave the tree clean.
        image = ROOT / "docs" / "img" / "demo-run.png"
        if not image.exists() or os.environ.get("UPDATE_DOCS_SCREENSHOTS") == "1":
            image.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(image), full_page=True)
    finally:
        await context.close()


async def test_viewers_added_later_subscribe_and_removed_ones_unsubscribe(
    page: Any, daphne_server: Daphne, emulator: Any
) -> None:
    sent: list[dict[str, Any]] = []
    page.on(
        "websocket",
        lambda ws: ws.on("framesent", lambda payload: sent.append(json.loads(payload))),
    )
    run_id, answer = start_demo_run(emulator, "viewers that come and go", 20)
    await page.goto(f"{daphne_server.url}/runs/{run_id}/?timeout=1&render=text")
    await page.wait_for_function(OUTPUT_LENGTH_AT_LEAST, arg=10, timeout=10_000)
    # Swap in a fresh copy of the server-rendered viewer, as htmx or a SPA router would.
    await page.evaluate(
        """() => {
            const old = document.querySelector("[data-trigger-stream]");
            const copy = old.cloneNode(true);
            copy.id = "again";
            copy.setAttribute("data-state", "connecting");
            // Emptied, so without the first HTML's cursor either: it starts from the start.
            copy.querySelector("[data-trigger-output]").textContent = "";
            for (const name of ["cursor", "cursor-i", "entry-before", "parts"]) {
                copy.removeAttribute("data-" + name);
            }
            old.replaceWith(copy);
        }"""
    )
    again = page.locator("#again")
    await expect(again).to_have_attribute("data-state", "complete", timeout=20_000)
    assert await again.locator("[data-trigger-output]").text_content() == answer
    # The stream viewers' messages (the page's run badge and form subscribe to the run too).
    run_subs = {m["sub"] for m in sent if m.get("feed") == "run"}
    kinds = [(m["type"], m["sub"]) for m in sent if m["type"] != "ack" and m["sub"] not in run_subs]
    # The new viewer subscribes before the old one unsubscribes, so the socket stays open.
    old_sub, new_sub = kinds[0][1], kinds[1][1]
    assert old_sub != new_sub
    assert kinds == [("subscribe", old_sub), ("subscribe", new_sub), ("unsubscribe", old_sub)]
    assert next(m for m in sent if m.get("sub") == new_sub)["cursor"] is None


async def test_one_socket_carries_every_viewer_json_chunks_and_max_parts(
    page: Any, daphne_server: Daphne, emulator: Any, e2e_user: Any
) -> None:
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    chunks = ["a", {"n": 1}, 2, "<b>not html</b>"]
    run_id, _ = emulator.trigger("echo-parts", {"parts": chunks})
    ticket = make_ticket(user_pk=e2e_user.pk, run_id=run_id, key="default")
    await page.goto(f"{daphne_server.url}/")
    # Two viewers of the same stream added after load: all parts in one, the last two in the other.
    await page.evaluate(
        """([ticket, runId]) => {
            for (const [id, maxParts] of [["all", ""], ["last-two", "2"]]) {
                const el = document.createElement("div");
                el.id = id;
                Object.assign(el.dataset, {
                    triggerStream: "", ticket, runId, key: "default", timeout: "1", maxParts,
                });
                el.innerHTML = "<div data-trigger-output></div>";
                document.querySelector("main").append(el);
            }
        }""",
        [ticket, run_id],
    )
    for viewer_id in ("all", "last-two"):
        await expect(page.locator(f"#{viewer_id}")).to_have_attribute(
            "data-state", "complete", timeout=10_000
        )
    texts = {
        viewer_id: await page.locator(f"#{viewer_id} [data-trigger-output]").text_content()
        for viewer_id in ("all", "last-two")
    }
    assert texts == {"all": 'a{"n":1}\n2\n<b>not html</b>', "last-two": "2\n<b>not html</b>"}
    assert await page.locator("main b").count() == 0  # text, never markup
    assert len(sockets) == 1


# Counts the page's WebSocket constructions and their fate, page-side.
SOCKET_SPY = """
window.__sockets = [];
(function () {
  var Native = window.WebSocket;
  function Spy(url, protocols) {
    var ws = protocols === undefined ? new Native(url) : new Native(url, protocols);
    var record = {state: "connecting"};
    window.__sockets.push(record);
    ws.addEventListener("open", function () { record.state = "open"; });
    ws.addEventListener("close", function () { record.state = "closed"; });
    return ws;
  }
  Spy.prototype = Native.prototype;
  ["CONNECTING", "OPEN", "CLOSING", "CLOSED"].forEach(function (k) { Spy[k] = Native[k]; });
  window.WebSocket = Spy;
})();
"""


@pytest.mark.parametrize(
    "wake_up",
    [
        "window.dispatchEvent(new Event('online'))",
        "document.dispatchEvent(new Event('visibilitychange'))",
    ],
    ids=["online", "visible"],
)
async def test_online_and_visible_reconnect_at_once_without_waiting_for_the_backoff(
    page: Any, daphne_server: Daphne, emulator: Any, wake_up: str
) -> None:
    run_id, answer = start_demo_run(emulator, "back online after a network change", 15)
    await page.add_init_script(SOCKET_SPY)
    await page.clock.install()
    await page.goto(f"{daphne_server.url}/runs/{run_id}/?timeout=2&render=text")
    viewer = page.locator(VIEWER)
    await expect(viewer).to_have_attribute("data-state", "live", timeout=10_000)
    await page.wait_for_function(OUTPUT_LENGTH_AT_LEAST, arg=20, timeout=10_000)

    daphne_server.kill()
    await expect(viewer).to_have_attribute("data-state", "reconnecting", timeout=10_000)
    # Freeze the page's timers: from here on the backoff's retry timer cannot fire.
    await page.clock.pause_at(await page.evaluate("Date.now()") + 1000)
    await page.wait_for_function("() => window.__sockets.every((s) => s.state === 'closed')")
    opened_before = await page.evaluate("window.__sockets.length")
    daphne_server.start()  # same port

    await page.evaluate(wake_up)
    # Only the wake-up handler can have opened this socket: the timers are frozen.
    await expect(viewer).to_have_attribute("data-state", "live", timeout=10_000)
    assert await page.evaluate("window.__sockets.length") == opened_before + 1

    await page.clock.resume()
    await expect(viewer).to_have_attribute("data-state", "complete", timeout=30_000)
    assert await page.locator(OUTPUT).text_content() == answer
