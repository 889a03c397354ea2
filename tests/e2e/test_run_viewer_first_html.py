"""{% run_viewer %}'s first HTML in Chromium: each stream's text so far is in the page as it
arrives, the socket goes on after it with every part once; a finished run renders complete and
the page opens no WebSocket; without JavaScript the text is readable."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from playwright.async_api import expect

from bench.stack import Daphne
from tests.e2e.test_run_viewer import append, control, own_agent_run
from trigger_django.emulator.tasks import demo_weather_temperature

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

AGENT = "#agent"
SECTIONS = "(el) => [...el.children].map((c) => [c.className, c.textContent])"


def section(key: str) -> str:
    return f'{AGENT} [data-trigger-stream][data-key="{key}"]'


def text_runs(key: str) -> str:
    return f"{section(key)} [data-trigger-output]"


async def test_each_streams_text_so_far_is_in_the_first_html_and_the_socket_goes_on_after_it(
    page: Any, daphne_server: Daphne, emulator: Any, e2e_user: Any
) -> None:
    run_id, _ = emulator.trigger("external-writer", {})
    own_agent_run(run_id, e2e_user)
    first = ["The <first> ", "half ", "of it, "]
    rest = ["then the ", "second & ", "last."]
    notes = ["one note. "]
    for chunk in first:
        append(emulator, run_id, "openai", chunk)
    for chunk in notes:
        append(emulator, run_id, "notes", chunk)
    response = await page.goto(f"{daphne_server.url}/runs/{run_id}/")
    body = await response.text()
    # The first HTML holds each stream's text, escaped, and the cursor after its last part.
    assert html.escape("".join(first)) in body
    assert html.escape("".join(notes)) in body
    assert re.search(r'data-key="openai"[^>]*data-cursor="2"', body)
    assert re.search(r'data-key="notes"[^>]*data-cursor="0"', body)
    assert "This run is still going: reload the page to see more." in body
    for key in ("openai", "notes"):
        await expect(page.locator(section(key))).to_have_attribute(
            "data-state", "live", timeout=15_000
        )
    for chunk in rest:
        append(emulator, run_id, "openai", chunk)
    append(emulator, run_id, "notes", "two notes.")
    openai = page.locator(text_runs("openai"))
    # Exact: nothing shown twice, nothing lost, in the first HTML's text block.
    await expect(openai).to_have_text("".join(first + rest), timeout=20_000)
    await expect(page.locator(text_runs("notes"))).to_have_text("one note. two notes.")
    assert await openai.evaluate(SECTIONS) == [["trigger-run__text", "".join(first + rest)]]
    # The socket brought only what the first HTML did not hold.
    chunks = await page.evaluate("window.__viewer.chunks")
    assert sorted(chunks) == sorted([*rest, "two notes."])
    # Not built again by the script: one section per stream.
    assert await page.locator(f"{AGENT} [data-trigger-stream]").count() == 2
    control(emulator, run_id, "complete", {"output": None})
    await expect(page.locator(AGENT)).to_have_attribute("data-state", "complete", timeout=10_000)
    for key in ("openai", "notes"):
        await expect(page.locator(section(key))).to_have_attribute(
            "data-state", "complete", timeout=10_000
        )


async def test_a_finished_runs_viewer_renders_complete_and_opens_no_websocket(
    page: Any, daphne_server: Daphne, emulator: Any, e2e_user: Any
) -> None:
    run_id, _ = emulator.trigger("demo-weather-agent", {"city": "Oslo", "tokens_per_second": 1000})
    own_agent_run(run_id, e2e_user)
    emulator.wait_for_status(run_id, "COMPLETED_SUCCESSFULLY", 30)
    sockets: list[str] = []
    page.on("websocket", lambda socket: sockets.append(socket.url))
    response = await page.goto(f"{daphne_server.url}/runs/{run_id}/")
    body = await response.text()
    # The run viewer and its one stream render finished: nothing on the page is live.
    assert re.findall(r'data-state="(\w+)"', body) == ["complete", "complete"]
    assert "<noscript>" not in body
    await page.wait_for_load_state("networkidle")
    temperature = demo_weather_temperature("Oslo")
    agent = page.locator(AGENT)
    await expect(agent.locator("[data-trigger-badge]")).to_have_text("Completed")
    await expect(agent.locator("[data-trigger-step]")).to_have_text("Done 100%")
    output = page.locator(text_runs("openai"))
    await expect(output).to_have_attribute("aria-busy", "false")
    # The weather agent's whole answer, its tool parts through the page's part templates.
    assert await output.evaluate(SECTIONS) == [
        ["trigger-run__text", "Let me check the weather in Oslo."],
        ["weather-call", "Looking up the weather in Oslo…"],
        ["weather-result", f"The weather in Oslo is {temperature} degrees."],
        ["trigger-run__text", f"The weather in Oslo is {temperature} degrees."],
    ]
    assert await page.evaluate("window.__viewer.states") == []  # the script subscribed nothing
    assert sockets == []


async def test_without_javascript_the_run_viewers_text_is_readable(
    browser: Any,
    daphne_server: Daphne,
    emulator: Any,
    e2e_user: Any,
    session_cookie: dict[str, str],
) -> None:
    context = await browser.new_context(java_script_enabled=False)
    await context.add_cookies([{**session_cookie, "url": daphne_server.url}])
    page = await context.new_page()
    try:
        live, _ = emulator.trigger("external-writer", {})
        own_agent_run(live, e2e_user)
        for chunk in ("Readable ", "without ", "JavaScript."):
            append(emulator, live, "openai", chunk)
        await page.goto(f"{daphne_server.url}/runs/{live}/")
        await expect(page.locator(text_runs("openai"))).to_have_text("Readable without JavaScript.")
        note = page.locator(f"{AGENT} .trigger-run__noscript")
        await expect(note).to_be_visible()
        await expect(note).to_contain_text("reload")
        done, _ = emulator.trigger(
            "demo-weather-agent", {"city": "Lima", "tokens_per_second": 1000}
        )
        own_agent_run(done, e2e_user)
        emulator.wait_for_status(done, "COMPLETED_SUCCESSFULLY", 30)
        await page.goto(f"{daphne_server.url}/runs/{done}/")
        await expect(page.locator(f"{text_runs('openai')} .weather-call")).to_have_text(
            "Looking up the weather in Lima…"
        )
        await expect(page.locator(f"{AGENT} [data-trigger-badge]")).to_have_text("Completed")
        assert await page.locator(f"{AGENT} .trigger-run__noscript").count() == 0
    finally:
        await context.close()


# A section's HTML without what only the first HTML carries (where the socket resumes).
SECTION_HTML = """(el) => {
  const copy = el.cloneNode(true);
  for (const name of ["data-cursor", "data-cursor-i", "data-entry-before", "data-parts"]) {
    copy.removeAttribute(name);
  }
  return copy.outerHTML;
}"""


async def test_a_server_rendered_section_is_the_markup_the_script_builds(
    page: Any, daphne_server: Daphne, emulator: Any, e2e_user: Any
) -> None:
    run_id, _ = emulator.trigger("external-writer", {})
    own_agent_run(run_id, e2e_user)
    await page.goto(f"{daphne_server.url}/runs/{run_id}/")
    await expect(page.locator(AGENT)).to_have_attribute("data-run-status", "EXECUTING")
    await expect(page.locator(f"{AGENT} [data-trigger-stream]")).to_have_count(0)
    append(emulator, run_id, "openai", "Built <live>.")
    built = page.locator(section("openai"))
    await expect(built.locator("[data-trigger-output]")).to_have_text("Built <live>.")
    await expect(built).to_have_attribute("data-state", "live")
    by_script = await built.evaluate(SECTION_HTML)
    # Another run whose stream holds the same when its page is rendered.
    other, _ = emulator.trigger("external-writer", {})
    own_agent_run(other, e2e_user)
    append(emulator, other, "openai", "Built <live>.")
    await page.goto(f"{daphne_server.url}/runs/{other}/")
    rendered = page.locator(section("openai"))
    assert await rendered.get_attribute("data-cursor") == "0"
    await expect(rendered).to_have_attribute("data-state", "live", timeout=15_000)
    await expect(rendered.locator("[data-trigger-announce]")).to_have_text("Receiving the stream.")
    by_server = await rendered.evaluate(SECTION_HTML)
    # The ticket differs per render and the run id per run; everything else is the same.
    ticket = re.compile(r'data-ticket="[^"]*"')
    assert ticket.sub("", by_server).replace(other, "RUN") == ticket.sub("", by_script).replace(
        run_id, "RUN"
    )
