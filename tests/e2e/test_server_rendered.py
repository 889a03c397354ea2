"""Server-rendered output in Chromium: the text so far in the first HTML (the socket resumes
after it), a finished run complete with no WebSocket, readable without JavaScript, start and
completion announced once in the status region, and an XSS corpus that never executes, in text
and markdown, with and without the strict CSP."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from playwright.async_api import expect

from bench.stack import Daphne
from tests.markdown_corpus import ANSWERS
from trigger_django.markdown import render_markdown

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

VIEWER = "[data-trigger-stream]"
OUTPUT = "[data-trigger-stream] [data-trigger-output]"
KEY = "ai-output"  # the run page's stream
# The markdown the page holds: the frozen blocks' HTML, then the tail's.
MARKDOWN_HTML = "(output) => [...output.children].map((c) => c.innerHTML).join('')"
# Records every text the status regions take, from the first paint on (the page's strict CSP
# allows no inline script; an init script is not one).
ANNOUNCEMENTS = """
window.__announced = [];
document.addEventListener("DOMContentLoaded", () => {
  for (const region of document.querySelectorAll("[data-trigger-announce]")) {
    new MutationObserver(() => window.__announced.push(region.textContent))
      .observe(region, {childList: true, characterData: true, subtree: true});
  }
});
"""


def tokens(text: str) -> list[str]:
    return re.findall(r"\S+\s*|\s+", text)


def append_text(emulator: Any, run_id: str, chunks: list[str]) -> None:
    for chunk in chunks:
        response = emulator.client.post(
            f"/realtime/v1/streams/{run_id}/self/{KEY}/append", content=chunk.encode()
        )
        response.raise_for_status()


def finished_run(emulator: Any, parts: list[str]) -> str:
    run_id, _ = emulator.trigger("echo-parts", {"parts": parts, "key": KEY})
    emulator.wait_for_status(run_id, "COMPLETED_SUCCESSFULLY", 30)
    return run_id


@pytest.mark.parametrize("mode", ["text", "markdown"])
async def test_the_first_html_holds_the_text_so_far_and_the_socket_resumes_after_it(
    page: Any, daphne_server: Daphne, emulator: Any, mode: str
) -> None:
    text = ANSWERS["overview"] + "\n"  # ends with a blank line: the tail needs no healing
    chunks = tokens(text)
    half = len(chunks) // 2
    run_id, _ = emulator.trigger("external-writer", {})
    append_text(emulator, run_id, chunks[:half])
    response = await page.goto(f"{daphne_server.url}/runs/{run_id}/?timeout=60&render={mode}")
    body = await response.text()
    so_far = "".join(chunks[:half])
    if mode == "text":
        assert html.escape(so_far, quote=True) in body
    else:
        heading = render_markdown("# Deploying a Django app\n")
        assert heading in body  # rendered on the server, in the first HTML
    assert f'data-cursor="{half - 1}"' in body
    viewer = page.locator(VIEWER)
    await expect(viewer).to_have_attribute("data-state", "live", timeout=15_000)
    append_text(emulator, run_id, chunks[half:])
    output = page.locator(OUTPUT)
    if mode == "text":
        await expect(output).to_have_text(text, timeout=20_000, use_inner_text=False)
        assert await output.text_content() == text  # nothing repeated, nothing lost
    else:
        expected = render_markdown(text)
        await page.wait_for_function(
            f"(html) => ({MARKDOWN_HTML})(document.querySelector('{OUTPUT}')) === html",
            arg=expected,
            timeout=20_000,
        )
    # The socket brought only what the first HTML did not hold.
    record = await page.evaluate("window.__viewer")
    assert record["chunks"] == chunks[half:]


async def test_a_finished_run_renders_complete_and_opens_no_websocket(
    page: Any, daphne_server: Daphne, emulator: Any
) -> None:
    text = ANSWERS["code"]
    run_id = finished_run(emulator, tokens(text))
    sockets: list[str] = []
    page.on("websocket", lambda socket: sockets.append(socket.url))
    response = await page.goto(f"{daphne_server.url}/runs/{run_id}/?render=markdown")
    body = await response.text()
    # Every live element of the page renders finished: the run's status badge, the answer, and
    # the approval form (closed, its run subscription complete).
    assert re.findall(r'data-state="(\w+)"', body) == ["complete", "complete", "closed", "complete"]
    await expect(page.locator("form[data-trigger-input]")).to_contain_text("no longer accepts")
    await page.wait_for_load_state("networkidle")
    viewer = page.locator(VIEWER)
    await expect(viewer).to_have_attribute("data-state", "complete")
    assert await page.locator(OUTPUT).evaluate(MARKDOWN_HTML) == render_markdown(text)
    await expect(page.locator(OUTPUT)).to_have_attribute("aria-busy", "false")
    assert sockets == []
    assert await page.locator("noscript").count() == 0


async def test_without_javascript_the_text_is_readable_and_a_live_run_says_reload(
    browser: Any, daphne_server: Daphne, emulator: Any, session_cookie: dict[str, str]
) -> None:
    context = await browser.new_context(java_script_enabled=False)
    await context.add_cookies([{**session_cookie, "url": daphne_server.url}])
    page = await context.new_page()
    try:
        run_id, _ = emulator.trigger("external-writer", {})
        append_text(emulator, run_id, ["Readable ", "without ", "JavaScript."])
        await page.goto(f"{daphne_server.url}/runs/{run_id}/?render=text")
        await expect(page.locator(OUTPUT)).to_have_text("Readable without JavaScript.")
        await expect(page.locator(".trigger-stream__noscript")).to_be_visible()
        await expect(page.locator(".trigger-stream__noscript")).to_contain_text("reload")
        done = finished_run(emulator, ["# Done\n\n", "All **there**.\n"])
        await page.goto(f"{daphne_server.url}/runs/{done}/?render=markdown")
        await expect(page.locator(f"{OUTPUT} h1")).to_have_text("Done")
        await expect(page.locator(f"{OUTPUT} strong")).to_have_text("there")
        assert await page.locator(".trigger-stream__noscript").count() == 0
    finally:
        await context.close()


async def test_the_status_region_announces_start_and_completion_once(
    page: Any, daphne_server: Daphne, emulator: Any
) -> None:
    await page.add_init_script(ANNOUNCEMENTS)
    run_id, _ = emulator.trigger(
        "echo-parts", {"parts": tokens(ANSWERS["overview"]), "key": KEY, "delay_ms": 10}
    )
    await page.goto(f"{daphne_server.url}/runs/{run_id}/?timeout=5&render=markdown")
    output = page.locator(OUTPUT)
    await expect(output).to_have_attribute("role", "log")
    await expect(page.locator(VIEWER)).to_have_attribute("data-state", "complete", timeout=30_000)
    await expect(output).to_have_attribute("aria-busy", "false")
    announced = await page.evaluate("window.__announced")
    assert announced == ["Receiving the stream.", "The stream is complete."]
    region = page.locator(f"{VIEWER} [data-trigger-announce]")
    await expect(region).to_have_attribute("role", "status")
    # The root is no live region of its own: only the status region speaks, once per event.
    assert await page.locator(VIEWER).get_attribute("aria-live") is None


XSS_PARTS = [
    '<img src=x onerror="window.__pwned = 1">\n\n',
    "<script>window.__pwned = 2</script>\n\n",
    '"><svg onload="window.__pwned = 3">\n\n',
    "[one](javascript:window.__pwned=4) <javascript:alert(5)> [six](<javascript:alert(6)>)\n\n",
    "![seven](javascript:alert(7)) ![eight](data:image/svg+xml,<svg onload=alert(8)>)\n\n",
    '<iframe srcdoc="<script>parent.__pwned=9</script>"></iframe>\n\n',
    "[ten](data:text/html;base64,PHNjcmlwdD5hbGVydCgxMCk8L3NjcmlwdD4=) "
    "[x](vbscript:msgbox(11))\n\n",
    "```\n</code></pre><img src=x onerror=alert(12)>\n```\n\n",
    "| a | b |\n|---|---|\n| <b onclick=alert(13)>c</b> | [d](javascript:alert(14)) |\n\n",
    "**<a href=javascript:alert(15)>bold</a>** `<script>alert(16)</script>`\n",
]
HOSTILE_IN_OUTPUT = """(output) => {
  const found = [];
  for (const el of output.querySelectorAll("*")) {
    if (["SCRIPT", "IFRAME", "SVG", "OBJECT", "EMBED", "IMG", "B", "STYLE"].includes(el.tagName)) {
      found.push(el.tagName);
    }
    for (const attr of el.attributes) {
      if (attr.name.startsWith("on") || attr.name === "srcdoc") { found.push(attr.name); }
      if (/^\\s*(javascript|data|vbscript):/i.test(attr.value)) {
        found.push(attr.name + "=" + attr.value);
      }
    }
  }
  return found;
}"""


@pytest.mark.parametrize("csp", ["strict CSP", "no CSP"])
@pytest.mark.parametrize("mode", ["text", "markdown"])
async def test_an_xss_corpus_never_executes(
    browser: Any,
    daphne_server: Daphne,
    emulator: Any,
    session_cookie: dict[str, str],
    mode: str,
    csp: str,
) -> None:
    context = await browser.new_context(bypass_csp=csp == "no CSP")
    await context.add_cookies([{**session_cookie, "url": daphne_server.url}])
    page = await context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    try:
        # Rendered into the first HTML (a finished run), and streamed over the socket.
        done = finished_run(emulator, XSS_PARTS)
        live, _ = emulator.trigger("echo-parts", {"parts": XSS_PARTS, "key": KEY, "delay_ms": 20})
        for run_id in (done, live):
            await page.goto(f"{daphne_server.url}/runs/{run_id}/?timeout=2&render={mode}")
            viewer = page.locator(VIEWER)
            await expect(viewer).to_have_attribute("data-state", "complete", timeout=30_000)
            output = page.locator(OUTPUT)
            assert await output.evaluate(HOSTILE_IN_OUTPUT) == []
            assert await page.evaluate("window.__pwned") is None
            assert await page.locator("main script, main iframe, main svg").count() == 0
            text = await output.text_content()
            if mode == "text":
                assert text == "".join(XSS_PARTS)
            else:
                assert "<script>window.__pwned = 2</script>" in text
                assert '<iframe srcdoc="<script>parent.__pwned=9</script>"></iframe>' in text
                assert await output.locator("table td").count() == 2
        assert dialogs == []
    finally:
        await context.close()
