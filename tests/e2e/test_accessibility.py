"""axe-core (Deque's engine, bundled by axe-playwright-python) on the demo's pages in Chromium:
zero violations on the login and home pages, a live and a finished run page in text and
markdown, and the weather agent's run viewer."""

from __future__ import annotations

import re
from typing import Any

import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import expect

from bench.stack import Daphne
from tests.markdown_corpus import ANSWERS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

VIEWER = "[data-trigger-stream]"


async def violations(page: Any) -> list[str]:
    results = await Axe().run(page)
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at "
        + ", ".join(str(node["target"]) for node in v["nodes"])
        for v in results.response["violations"]
    ]


def tokens(text: str) -> list[str]:
    return re.findall(r"\S+\s*|\s+", text)


async def test_the_login_page_has_no_violations(browser: Any, daphne_server: Daphne) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    try:
        await page.goto(f"{daphne_server.url}/login/")
        assert await violations(page) == []
    finally:
        await context.close()


async def test_the_home_page_has_no_violations(page: Any, daphne_server: Daphne) -> None:
    await page.goto(f"{daphne_server.url}/")
    assert await violations(page) == []


@pytest.mark.parametrize("mode", ["text", "markdown"])
async def test_run_pages_live_and_finished_have_no_violations(
    page: Any, daphne_server: Daphne, emulator: Any, mode: str
) -> None:
    parts = tokens(ANSWERS["overview"])
    live, _ = emulator.trigger("echo-parts", {"parts": parts, "key": "ai-output", "delay_ms": 30})
    await page.goto(f"{daphne_server.url}/runs/{live}/?timeout=5&render={mode}")
    await expect(page.locator(VIEWER)).to_have_attribute("data-state", "live", timeout=15_000)
    assert await violations(page) == []  # while it streams
    done, _ = emulator.trigger("echo-parts", {"parts": parts, "key": "ai-output"})
    emulator.wait_for_status(done, "COMPLETED_SUCCESSFULLY", 30)
    await page.goto(f"{daphne_server.url}/runs/{done}/?render={mode}")
    await expect(page.locator(VIEWER)).to_have_attribute("data-state", "complete")
    assert await violations(page) == []


async def test_the_weather_agents_run_viewer_has_no_violations(
    page: Any, daphne_server: Daphne
) -> None:
    await page.goto(f"{daphne_server.url}/")
    await page.get_by_label("Or ask the weather agent about a city").fill("Lisbon")
    await page.get_by_role("button", name="Ask the weather agent").click()
    agent = page.locator("[data-trigger-run-viewer]")
    await expect(agent).to_have_attribute("data-run-status", "COMPLETED", timeout=20_000)
    stream = agent.locator('[data-trigger-stream][data-key="openai"]')
    await expect(stream).to_have_attribute("data-state", "complete", timeout=10_000)
    assert await violations(page) == []
