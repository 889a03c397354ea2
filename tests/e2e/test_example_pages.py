"""The example project's pages in Chromium: nothing missing (no 404 in the console), and the
login page names the demo account when the demo runs."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import expect

from bench.stack import Daphne
from tests.e2e.conftest import E2E_PASSWORD, E2E_USER

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


async def test_a_fresh_visit_logs_nothing_missing_and_names_the_demo_account(
    browser: Any, daphne_server: Daphne, e2e_user: Any
) -> None:
    daphne_server.stop()
    daphne_server.env = {**daphne_server.env, "EXAMPLE_DEMO_LOGIN": "demo / demo"}
    daphne_server.start()
    context = await browser.new_context()
    page = await context.new_page()
    console: list[str] = []
    failed: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("response", lambda r: r.status >= 400 and failed.append(f"{r.status} {r.url}"))
    try:
        await page.goto(f"{daphne_server.url}/")
        await expect(page.locator(".demo-login")).to_have_text(
            "This is the demo: log in as demo / demo."
        )
        await page.fill("input[name=username]", E2E_USER)
        await page.fill("input[name=password]", E2E_PASSWORD)
        await page.click("button[type=submit]")
        await page.fill("input[name=prompt]", "favicons")
        await page.click("text=Write with AI")
        await page.wait_for_url(f"{daphne_server.url}/runs/run_*/")
        viewer = page.locator("[data-trigger-stream]")
        await expect(viewer).to_have_attribute("data-state", "live", timeout=20_000)
        await expect(page.locator("[data-trigger-output] h2")).to_have_text("favicons")
        # The icon was asked for, and found.
        icon = await page.evaluate(
            "fetch(document.querySelector('link[rel=icon]').href).then(r => r.status)"
        )
        assert icon == 200
    finally:
        await context.close()
    assert failed == []
    assert [line for line in console if line.startswith("error")] == []
