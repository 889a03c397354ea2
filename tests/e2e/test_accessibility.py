"""Accessibility of the demo's pages in Chromium: axe-core finds no violations on the run page
(streaming, complete, failed), the approval form (ready, sent) and the login page; the viewer's
status region announces start, completion and failure once each; everything works by keyboard."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import expect

from tests.e2e.conftest import E2E_PASSWORD, E2E_USER, DaphneServer, axe_violations, own_run

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

VIEWER = "[data-trigger-stream]"
OUTPUT = "[data-trigger-stream] [data-trigger-output]"
ANNOUNCE = "[data-trigger-stream] [data-trigger-announce]"
FORM = "form[data-trigger-input='approval']"

# Page-side record of every text put into a live region (role="status"), and of every change of
# the output's aria-busy, from before the page's own scripts run. Added as an init script (which
# the page's CSP does not govern), not as an inline script.
LIVE_REGION_RECORDER = """
window.__live = {announced: [], formStatus: [], busy: []};
new MutationObserver((records) => {
  for (const record of records) {
    const target = record.target.nodeType === 1 ? record.target : record.target.parentElement;
    if (!target) { continue; }
    if (record.type === "attributes") {
      window.__live.busy.push(target.getAttribute("aria-busy"));
      continue;
    }
    // What a screen reader would be given: inserted text, or text changed in place.
    const text = record.type === "characterData"
      ? target.textContent
      : [...record.addedNodes].map((n) => n.textContent).join("");
    if (!text) { continue; }
    if (target.closest("[data-trigger-announce]")) { window.__live.announced.push(text); }
    if (target.closest("form [data-trigger-status]")) { window.__live.formStatus.push(text); }
  }
}).observe(document, {
  subtree: true, childList: true, characterData: true,
  attributes: true, attributeFilter: ["aria-busy"],
});
"""


def start_demo_run(
    emulator: Any, tokens_per_second: float = 400, *, await_approval: bool = False
) -> str:
    run_id, _ = emulator.trigger(
        "demo-ai-writer",
        {
            "prompt": "accessible pages",
            "tokens_per_second": tokens_per_second,
            "await_approval": await_approval,
        },
    )
    return str(run_id)


def assert_no_violations(violations: list[dict[str, Any]]) -> None:
    assert violations == [], "\n".join(
        f"{v['id']} ({v['impact']}): {v['help']} at {v['targets']}" for v in violations
    )


async def test_run_page_streams_into_a_log_and_announces_start_and_end_once(
    page: Any, daphne_server: DaphneServer, emulator: Any
) -> None:
    run_id = start_demo_run(emulator, tokens_per_second=150)
    await page.add_init_script(LIVE_REGION_RECORDER)
    await page.goto(f"{daphne_server.url}/runs/{run_id}/?timeout=1")
    output = page.locator(OUTPUT)
    await expect(output).to_have_attribute("role", "log")
    await expect(page.locator(VIEWER)).to_have_attribute("data-state", "live", timeout=10_000)
    await expect(output).to_have_attribute("aria-busy", "true")
    await expect(page.locator(ANNOUNCE)).to_have_text("Streaming started.")
    assert_no_violations(await axe_violations(page))

    await expect(page.locator(VIEWER)).to_have_attribute("data-state", "complete", timeout=20_000)
    await expect(output).to_have_attribute("aria-busy", "false")
    await expect(page.locator(ANNOUNCE)).to_have_text("Streaming finished.")
    record = await page.evaluate("window.__live")
    # Once each, however many parts arrived (the answer came in many); never the parts.
    assert record["announced"] == ["Streaming started.", "Streaming finished."]
    assert record["busy"][-1] == "false"
    assert "false" not in record["busy"][:-1]
    assert len(await page.evaluate("window.__viewer.chunks")) > 20
    # The root is no longer a live region over the whole output.
    assert await page.locator(VIEWER).get_attribute("aria-live") is None
    assert_no_violations(await axe_violations(page))


async def test_a_failed_stream_is_announced_once_with_its_message(
    page: Any, daphne_server: DaphneServer, e2e_user: Any
) -> None:
    own_run("run_doesnotexist", e2e_user)  # the user's own run, unknown to Trigger.dev
    await page.add_init_script(LIVE_REGION_RECORDER)
    await page.goto(f"{daphne_server.url}/runs/run_doesnotexist/?timeout=1")
    await expect(page.locator(VIEWER)).to_have_attribute("data-state", "error", timeout=10_000)
    await expect(page.locator(OUTPUT)).to_have_attribute("aria-busy", "false")
    announced = (await page.evaluate("window.__live"))["announced"]
    # The subscription may be confirmed before the upstream answers 404: then "started" came
    # first. Either way the failure is said once, with the message.
    assert announced[:-1] in ([], ["Streaming started."])
    failure = announced[-1]
    assert failure.startswith("Streaming failed. ")
    assert "run_doesnotexist" in failure
    assert "404" in failure
    assert_no_violations(await axe_violations(page))


async def test_the_approval_form_works_by_keyboard_and_announces_its_states(
    page: Any, daphne_server: DaphneServer, emulator: Any
) -> None:
    run_id = start_demo_run(emulator, tokens_per_second=2000, await_approval=True)
    await page.add_init_script(LIVE_REGION_RECORDER)
    await page.goto(f"{daphne_server.url}/runs/{run_id}/?timeout=1")
    form = page.locator(FORM)
    await expect(form).to_have_attribute("data-state", "ready")
    await expect(page.locator(OUTPUT)).to_contain_text("today.")
    assert_no_violations(await axe_violations(page))

    # Tab from the top of the page to the Approve button, then press Enter: no mouse.
    approve = page.get_by_role("button", name="Approve")
    for _ in range(20):
        await page.keyboard.press("Tab")
        if await approve.evaluate("(button) => button === document.activeElement"):
            break
    else:
        pytest.fail("the Approve button is not reachable with Tab")
    await page.keyboard.press("Enter")

    await expect(form).to_have_attribute("data-state", "sent")
    await expect(form.get_by_role("status")).to_have_text("Approved.")
    assert (await page.evaluate("window.__live"))["formStatus"] == ["Sending…", "Approved."]
    assert_no_violations(await axe_violations(page))


async def test_login_page_has_no_violations_and_logs_in_by_keyboard(
    browser: Any, daphne_server: DaphneServer, e2e_user: Any
) -> None:
    context = await browser.new_context()
    try:
        page = await context.new_page()
        await page.goto(f"{daphne_server.url}/login/?next=/")
        assert_no_violations(await axe_violations(page))
        username = page.get_by_label("Username")
        for _ in range(20):
            await page.keyboard.press("Tab")
            if await username.evaluate("(input) => input === document.activeElement"):
                break
        else:
            pytest.fail("the username field is not reachable with Tab")
        await page.keyboard.type(E2E_USER)
        await page.keyboard.press("Tab")
        await page.keyboard.type(E2E_PASSWORD)
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("heading", name="Ask the AI writer")).to_be_visible()
        assert_no_violations(await axe_violations(page))
        # The check itself can fail: a button without a name is found.
        await page.evaluate(
            "document.querySelector('main').append(document.createElement('button'))"
        )
        assert [v["id"] for v in await axe_violations(page)] == ["button-name"]
    finally:
        await context.close()
