"""{% approval_form %} in Chromium: enhanced by the script, and as a plain form without JavaScript.

Both paths approve a real ``demo-ai-writer`` run in the emulator through daphne; the emulator's
record of what the task received is the ground truth.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from playwright.async_api import expect

from bench.stack import Daphne
from tests.e2e.conftest import E2E_USER, artifact

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

FORM = "form[data-trigger-input='approval']"

# Page-side record of the form's states: a MutationObserver snapshot after every attribute change
# (it runs right after the submit handler, long before the fetch answers), and the form events.
FORM_RECORDER = """
window.__form = {snapshots: [], events: []};
document.addEventListener("DOMContentLoaded", () => {
  const form = document.querySelector("form[data-trigger-input]");
  const snapshot = () => ({
    state: form.getAttribute("data-state"),
    busy: form.getAttribute("aria-busy"),
    disabled: [...form.querySelectorAll("button")].map((b) => b.disabled),
  });
  new MutationObserver(() => window.__form.snapshots.push(snapshot())).observe(form, {
    attributes: true,
    attributeFilter: ["data-state", "aria-busy"],
  });
  for (const name of ["trigger:sent", "trigger:error"]) {
    form.addEventListener(name, (e) => window.__form.events.push({name, detail: e.detail}));
  }
});
"""


def start_demo_run(emulator: Any) -> str:
    run_id, _ = emulator.trigger(
        "demo-ai-writer", {"prompt": "approvals from Django", "tokens_per_second": 2000}
    )
    return run_id


async def wait_for_task(emulator: Any, run_id: str) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        run: dict[str, Any] = emulator.run(run_id)
        return run if run["status"] == "COMPLETED_SUCCESSFULLY" else None

    result: dict[str, Any] = await asyncio.to_thread(emulator.wait_for, finished, 15.0)
    return result


async def test_with_javascript_the_form_sends_in_place_and_the_task_continues(
    page: Any, daphne_server: Daphne, emulator: Any
) -> None:
    run_id = start_demo_run(emulator)
    await page.add_init_script(FORM_RECORDER)
    await page.goto(f"{daphne_server.url}/runs/{run_id}/")
    form = page.locator(FORM)
    await expect(form).to_have_attribute("data-ready", "")
    await expect(form).to_have_attribute("data-state", "ready")
    # Let the viewer reach the end of the answer, so the continuation is what appears next.
    await expect(page.locator("#answer [data-trigger-output]")).to_contain_text("today.")

    await page.get_by_role("button", name="Approve").click()

    await expect(form).to_have_attribute("data-state", "sent")
    await expect(form.get_by_role("status")).to_have_text("Approved.")
    await expect(page.locator("#answer [data-trigger-output]")).to_contain_text(
        f"Approved by {E2E_USER}.", timeout=15_000
    )
    record = await page.evaluate("window.__form")
    snapshots = record["snapshots"]
    assert snapshots[0] == {"state": "sending", "busy": "true", "disabled": [True, True]}
    assert snapshots[-1] == {"state": "sent", "busy": None, "disabled": [True, True]}
    assert [event["name"] for event in record["events"]] == ["trigger:sent"]
    assert record["events"][0]["detail"] == {
        "runId": run_id,
        "streamId": "approval",
        "data": {"approved": True, "reviewer": E2E_USER},
        "message": "Approved.",
    }
    # No page load happened: the send was a fetch.
    assert page.url == f"{daphne_server.url}/runs/{run_id}/"

    run = await wait_for_task(emulator, run_id)
    assert [entry["data"] for entry in run["inputs"]] == [{"approved": True, "reviewer": E2E_USER}]
    assert run["output"] == {"approved": True, "reviewer": E2E_USER}
    await page.screenshot(path=artifact("approval-sent.png"), full_page=True)


async def test_with_javascript_an_error_is_shown_in_words_and_the_form_can_retry(
    page: Any, daphne_server: Daphne, emulator: Any
) -> None:
    run_id = start_demo_run(emulator)
    await page.add_init_script(FORM_RECORDER)
    await page.goto(f"{daphne_server.url}/runs/{run_id}/")
    form = page.locator(FORM)
    await expect(form).to_have_attribute("data-state", "ready")
    # The answer has stopped growing (and moving the form) before the click.
    await expect(page.locator("#answer [data-trigger-output]")).to_contain_text("today.")
    # The run ends before anyone answers, and before the page hears of it (its run
    # subscription is taken out, as when the socket is down): the server refuses the send.
    await page.locator("form[data-trigger-input] [data-trigger-live-run]").evaluate(
        "(el) => el.remove()"
    )
    emulator.complete_run(run_id)

    await page.get_by_role("button", name="Reject").click()

    await expect(form).to_have_attribute("data-state", "error")
    await expect(form.get_by_role("alert")).to_have_text(
        "The run has already finished; it no longer accepts input."
    )
    await expect(page.get_by_role("button", name="Reject")).to_be_enabled()
    record = await page.evaluate("window.__form")
    assert record["snapshots"][0]["state"] == "sending"
    assert record["snapshots"][-1] == {"state": "error", "busy": None, "disabled": [False, False]}
    [event] = record["events"]
    assert event["name"] == "trigger:error"
    assert event["detail"]["status"] == 400
    assert emulator.run(run_id)["inputs"] == []


async def test_without_javascript_the_form_posts_and_redirects_back_with_a_message(
    browser: Any, daphne_server: Daphne, emulator: Any, session_cookie: dict[str, str]
) -> None:
    run_id = start_demo_run(emulator)
    context = await browser.new_context(java_script_enabled=False)
    try:
        await context.add_cookies([{**session_cookie, "url": daphne_server.url}])
        page = await context.new_page()
        await page.goto(f"{daphne_server.url}/runs/{run_id}/")
        form = page.locator(FORM)
        # The script never ran: the form is plain HTML, with working buttons.
        assert await form.get_attribute("data-ready") is None
        await expect(page.get_by_role("button", name="Approve")).to_be_enabled()

        async with page.expect_navigation():
            await page.get_by_role("button", name="Approve").click()

        assert page.url == f"{daphne_server.url}/runs/{run_id}/"
        await expect(page.locator(".messages")).to_have_text("Approved.")
        run = await wait_for_task(emulator, run_id)
        assert [entry["data"] for entry in run["inputs"]] == [
            {"approved": True, "reviewer": E2E_USER}
        ]
        await page.screenshot(path=artifact("approval-no-js.png"), full_page=True)
    finally:
        await context.close()


async def test_a_form_added_after_load_is_enhanced_too(
    page: Any, daphne_server: Daphne, emulator: Any
) -> None:
    run_id = start_demo_run(emulator)
    await page.goto(f"{daphne_server.url}/runs/{run_id}/")
    await expect(page.locator(FORM)).to_have_attribute("data-state", "ready")
    # Let the answer finish growing: while it grows it pushes the form down the page, and a
    # click aimed at a moving button can land beside it.
    await expect(page.locator("#answer [data-trigger-output]")).to_contain_text("today.")
    # Swap the form for a freshly rendered one, as an htmx swap would.
    await page.evaluate(
        """async () => {
          const html = await (await fetch(location.href)).text();
          const fresh = new DOMParser().parseFromString(html, "text/html")
            .querySelector("form[data-trigger-input]");
          fresh.id = "swapped";
          const old = document.querySelector("form[data-trigger-input]");
          old.replaceWith(document.adoptNode(fresh));
        }"""
    )
    swapped = page.locator("form#swapped")
    await expect(swapped).to_have_attribute("data-state", "ready")
    await swapped.get_by_role("button", name="Reject").click()
    await expect(swapped).to_have_attribute("data-state", "sent")
    assert page.url == f"{daphne_server.url}/runs/{run_id}/"
    run = await wait_for_task(emulator, run_id)
    assert [entry["data"] for entry in run["inputs"]] == [{"approved": False, "reviewer": E2E_USER}]
