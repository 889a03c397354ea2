"""{% run_status %} and {% run_viewer %} in Chromium: the status badge and progress bar of the
demo, the weather agent's tool parts, streams discovered mid-run, hostile tool arguments, and
stream viewers that end with their run."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from playwright.async_api import expect

from bench.stack import Daphne
from tests.e2e.conftest import artifact
from trigger_django.emulator.tasks import demo_weather_temperature

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

AGENT = "#agent"


def own_agent_run(run_id: str, user: Any, prompt: str = "Weather") -> None:
    """Record ``run_id`` as a weather-agent run of ``user`` (its page is the run viewer)."""

    def create() -> None:
        from django.db import connection

        from example_project.models import AiRun

        try:
            AiRun.objects.update_or_create(
                run_id=run_id,
                defaults={"owner_id": user.pk, "task": "demo-weather-agent", "prompt": prompt},
            )
        finally:
            connection.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(create).result()


def append(emulator: Any, run_id: str, key: str, chunk: Any) -> None:
    body = chunk if isinstance(chunk, str) else json.dumps(chunk)
    response = emulator.client.post(
        f"/realtime/v1/streams/{run_id}/self/{key}/append", content=body.encode()
    )
    response.raise_for_status()


def control(emulator: Any, run_id: str, action: str, body: dict[str, Any]) -> None:
    emulator.client.post(f"/_emulator/runs/{run_id}/{action}", json=body).raise_for_status()


async def test_the_weather_agent_shows_its_tool_parts_between_text_blocks(
    page: Any, daphne_server: Daphne, emulator: Any, e2e_user: Any
) -> None:
    await page.goto(f"{daphne_server.url}/")
    await page.get_by_label("Or ask the weather agent about a city").fill("Lisbon")
    await page.get_by_role("button", name="Ask the weather agent").click()
    agent = page.locator(AGENT)
    await expect(agent).to_have_attribute("data-run-status", "COMPLETED", timeout=20_000)
    temperature = demo_weather_temperature("Lisbon")
    stream = agent.locator('[data-trigger-stream][data-key="openai"]')
    await expect(stream).to_have_attribute("data-state", "complete", timeout=10_000)
    output = stream.locator("[data-trigger-output]")
    # In order: the text before the tool, the two tool templates, the answer.
    children = await output.evaluate(
        "(el) => Array.from(el.children).map((c) => [c.className, c.textContent])"
    )
    assert children == [
        ["trigger-run__text", "Let me check the weather in Lisbon."],
        ["weather-call", "Looking up the weather in Lisbon…"],
        ["weather-result", f"The weather in Lisbon is {temperature} degrees."],
        ["trigger-run__text", f"The weather in Lisbon is {temperature} degrees."],
    ]
    await expect(agent.locator("[data-trigger-badge]")).to_have_text("Completed")
    await expect(agent.locator("[data-trigger-step]")).to_have_text("Done 100%")
    await expect(agent.locator("[data-trigger-metadata]")).to_contain_text('"step": "Done"')
    await page.screenshot(path=artifact("weather-agent.png"), full_page=True)


async def test_streams_discovered_mid_run_fill_in_one_page(
    page: Any, daphne_server: Daphne, emulator: Any, e2e_user: Any
) -> None:
    run_id, _ = emulator.trigger("external-writer", {})
    own_agent_run(run_id, e2e_user)
    await page.goto(f"{daphne_server.url}/runs/{run_id}/")
    agent = page.locator(AGENT)
    await expect(agent).to_have_attribute("data-run-status", "EXECUTING")
    await expect(agent.locator("[data-trigger-stream]")).to_have_count(0)
    append(emulator, run_id, "openai", "first stream")
    first = agent.locator('[data-trigger-stream][data-key="openai"] [data-trigger-output]')
    await expect(first).to_have_text("first stream")
    # A second stream, created after the page loaded, appears beside the first.
    append(emulator, run_id, "notes", "second stream")
    second = agent.locator('[data-trigger-stream][data-key="notes"] [data-trigger-output]')
    await expect(second).to_have_text("second stream")
    control(emulator, run_id, "complete", {"output": None})
    await expect(agent).to_have_attribute("data-state", "complete", timeout=10_000)
    for key in ("openai", "notes"):
        section = agent.locator(f'[data-trigger-stream][data-key="{key}"]')
        await expect(section).to_have_attribute("data-state", "complete", timeout=10_000)


async def test_hostile_tool_arguments_are_rendered_as_text(
    page: Any, daphne_server: Daphne, emulator: Any, e2e_user: Any
) -> None:
    hostile = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
    call = {"type": "tool-call", "toolName": "getWeather", "args": {"location": hostile}}
    result = {**call, "type": "tool-result", "result": {"temperature": "<b>hot</b>"}}
    run_id, _ = emulator.trigger("echo-parts", {"parts": [call, result], "key": "openai"})
    own_agent_run(run_id, e2e_user)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    await page.goto(f"{daphne_server.url}/runs/{run_id}/")
    output = page.locator(f'{AGENT} [data-trigger-stream][data-key="openai"] [data-trigger-output]')
    await expect(output.locator(".weather-result")).to_have_text(
        f"The weather in {hostile} is <b>hot</b> degrees."
    )
    assert await output.locator("img, script, b").count() == 0
    assert await page.evaluate("window.__pwned") is None
    assert dialogs == []


async def test_the_demo_badge_goes_executing_waiting_completed_with_a_progress_bar(
    page: Any, daphne_server: Daphne, emulator: Any
) -> None:
    run_id, _ = emulator.trigger("demo-ai-writer", {"prompt": "Badges?", "tokens_per_second": 40})
    await page.add_init_script(
        """
        window.__statuses = [];
        window.__progress = [];
        document.addEventListener("trigger:run", (e) => {
          const s = e.detail.run.status;
          if (window.__statuses[window.__statuses.length - 1] !== s) window.__statuses.push(s);
          if (e.detail.run.progress) window.__progress.push(e.detail.run.progress.value);
        });
        """
    )
    await page.goto(f"{daphne_server.url}/runs/{run_id}/")
    status = page.locator("#status")
    await expect(status.locator("[data-trigger-progress-wrap]")).to_be_visible()
    await expect(status).to_have_attribute("data-run-status", "WAITING", timeout=30_000)
    await expect(status.locator("[data-trigger-badge]")).to_have_text("Waiting")
    await page.get_by_role("button", name="Approve").click()
    await expect(status).to_have_attribute("data-run-status", "COMPLETED", timeout=15_000)
    # The answer's viewer ends with its run, well before its 60 s idle timeout.
    answer = page.locator("#answer")
    await expect(answer).to_have_attribute("data-state", "complete", timeout=5_000)
    statuses = await page.evaluate("window.__statuses")
    assert statuses[-3:] == ["EXECUTING", "WAITING", "COMPLETED"] or statuses[-2:] == [
        "WAITING",
        "COMPLETED",
    ], statuses
    progress = await page.evaluate("window.__progress")
    assert progress == sorted(progress)
    assert progress[-1] == 1.0
    # The approval form closed with its run, saying why.
    form = page.locator("form[data-trigger-input]")
    await expect(form).to_have_attribute("data-state", "sent")


async def test_a_form_of_a_finished_run_is_closed_with_the_reason(
    page: Any, daphne_server: Daphne, emulator: Any
) -> None:
    run_id, _ = emulator.trigger("external-writer", {})
    await page.goto(f"{daphne_server.url}/runs/{run_id}/")
    form = page.locator("form[data-trigger-input]")
    await expect(form).to_have_attribute("data-state", "ready")
    control(emulator, run_id, "complete", {"output": None})
    await expect(form).to_have_attribute("data-state", "closed", timeout=10_000)
    await expect(form.locator("[data-trigger-status]")).to_have_text(
        "This run has finished (Completed); it no longer accepts input."
    )
    assert await form.get_by_role("button", name="Approve").is_disabled()


async def test_a_run_waiting_longer_than_the_timeout_still_shows_the_part_after_approval(
    page: Any, daphne_server: Daphne, emulator: Any
) -> None:
    run_id, _ = emulator.trigger("demo-ai-writer", {"prompt": "Wait?", "tokens_per_second": 400})
    await page.goto(f"{daphne_server.url}/runs/{run_id}/?timeout=1")
    status = page.locator("#status")
    await expect(status).to_have_attribute("data-run-status", "WAITING", timeout=20_000)
    answer = page.locator("#answer")
    # Three of the viewer's idle timeouts pass while the run waits for its approval (the
    # passing time is what is tested, not a synchronisation): the viewer is still live.
    await page.wait_for_timeout(3_000)
    await expect(answer).to_have_attribute("data-state", "live")
    await page.get_by_role("button", name="Approve").click()
    await expect(answer.locator("[data-trigger-output]")).to_contain_text(
        "Approved by", timeout=15_000
    )
    await expect(answer).to_have_attribute("data-state", "complete", timeout=10_000)
