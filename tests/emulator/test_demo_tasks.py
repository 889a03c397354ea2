"""The demo tasks as a run page sees them: the writer's progress metadata and status
(executing → waiting → completed), and the weather agent's AI SDK parts."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import httpx

from trigger_django.emulator import (
    EmulatorConfig,
    demo_answer_tokens,
    demo_weather_parts,
    demo_weather_temperature,
)
from trigger_django.emulator.state import InputReceived, Run
from trigger_django.emulator.tasks import execute, registered_task

from .conftest import SECRET, bearer, electric, read_body


async def follow_run(
    url: str, run_id: str, token: str, until: str = "COMPLETED_SUCCESSFULLY"
) -> list[dict[str, Any]]:
    """Every row the run's shape shows, snapshot then live, until ``until``."""
    rows: list[dict[str, Any]] = []
    params: dict[str, str] = {"offset": "-1"}
    async with httpx.AsyncClient(base_url=url, timeout=30.0) as client:
        while not rows or rows[-1]["status"] != until:
            response = await client.get(
                f"/realtime/v1/runs/{run_id}", params=params, headers=electric(token)
            )
            assert response.status_code == 200, response.text
            row = rows[-1] if rows else {}
            changed = False
            for message in response.json():
                if "value" in message:
                    row = {**row, **message["value"]}
                    changed = True
            if changed:
                rows.append(row)
            params = {
                "offset": response.headers["electric-offset"],
                "handle": response.headers["electric-handle"],
                "live": "true",
                "cursor": response.headers.get("electric-cursor", ""),
            }
    return rows


def metadata_of(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [json.loads(row["metadata"]) if row["metadata"] else {} for row in rows]


async def test_demo_writer_run_goes_executing_waiting_completed_live(emulator):
    prompt = "progress bars"
    run_id, token = emulator.trigger("demo-ai-writer", {"prompt": prompt, "tokens_per_second": 200})
    following = asyncio.create_task(follow_run(emulator.url, run_id, token))
    await asyncio.to_thread(
        emulator.wait_for, lambda: emulator.run(run_id)["status"] == "WAITING_TO_RESUME", 30
    )
    async with httpx.AsyncClient(base_url=emulator.url, timeout=10.0) as client:
        sent = await client.post(
            f"/realtime/v1/streams/{run_id}/input/approval",
            json={"data": {"approved": True, "reviewer": "Ada"}},
            headers=bearer(token),
        )
        assert sent.status_code == 200
    rows = await asyncio.wait_for(following, 60)

    statuses = [row["status"] for row in rows]
    collapsed = [s for i, s in enumerate(statuses) if i == 0 or statuses[i - 1] != s]
    # Updates between two polls arrive as one, so the short EXECUTING after the approval may
    # be folded into the completion; the order is fixed.
    assert collapsed in (
        ["EXECUTING", "WAITING_TO_RESUME", "EXECUTING", "COMPLETED_SUCCESSFULLY"],
        ["EXECUTING", "WAITING_TO_RESUME", "COMPLETED_SUCCESSFULLY"],
    )
    metadata = metadata_of(rows)
    progress = [m["progress"] for m in metadata if "progress" in m]
    assert progress == sorted(progress)
    assert metadata[statuses.index("WAITING_TO_RESUME")] == {
        "stage": "awaiting-approval",
        "progress": 1.0,
        "step": "Waiting for approval",
    }
    assert metadata[-1] == {"stage": "approved", "progress": 1.0, "step": "Approved"}
    assert emulator.run(run_id)["streams"]["ai-output"] == len(demo_answer_tokens(prompt)) + 1


async def test_demo_writer_reports_progress_every_five_percent():
    """Every change the writer makes, in order, recorded where the run shape is woken."""
    config = EmulatorConfig(secret_key=SECRET, stream_version="v2")
    run = Run(
        id="run_progress",
        task_identifier="demo-ai-writer",
        payload={"prompt": "progress bars", "tokens_per_second": 0},
        payload_type="application/json",
        raw_payload=None,
        stream_version="v2",
    )
    changes: list[tuple[str, dict[str, Any]]] = []
    touch = run.touch

    def recording_touch() -> None:
        changes.append((run.status, dict(run.metadata)))
        touch()

    run.touch = recording_touch  # type: ignore[method-assign]
    task = asyncio.create_task(execute(registered_task("demo-ai-writer"), run, config))
    while run.status != "WAITING_TO_RESUME":
        await asyncio.wait_for(run.changed(), 10)
    run.stream("$trigger.input:approval").append_part('{"approved":true,"reviewer":"Ada"}', "inp_1")
    run.inputs.append(InputReceived("approval", {"approved": True, "reviewer": "Ada"}, "inp_1", 0))
    await asyncio.wait_for(task, 10)

    writing = [meta for status, meta in changes if meta.get("stage") == "writing"]
    assert writing[0] == {"stage": "writing", "progress": 0.0, "step": "Writing"}
    # (One more change has the same progress: the stream appearing in realtimeStreams.)
    steps = sorted({meta["progress"] for meta in writing})
    assert [meta["progress"] for meta in writing] == sorted(meta["progress"] for meta in writing)
    assert all(0.05 <= b - a < 0.1 for a, b in itertools.pairwise(steps[1:]))
    assert len(steps) >= 15
    assert [status for status, _ in changes].count("WAITING_TO_RESUME") == 1
    assert changes[-1][0] == "COMPLETED_SUCCESSFULLY"
    assert run.output == {"approved": True, "reviewer": "Ada"}


async def test_weather_agent_emits_ai_sdk_parts(emulator, http):
    run_id, token = emulator.trigger(
        "demo-weather-agent", {"prompt": "What is the weather in Lisbon?", "tokens_per_second": 0}
    )
    run = await asyncio.to_thread(emulator.wait_for_status, run_id, "COMPLETED_SUCCESSFULLY")
    temperature = demo_weather_temperature("Lisbon")
    assert run["output"] == {
        "city": "Lisbon",
        "temperature": temperature,
        "answer": f"The weather in Lisbon is {temperature} degrees.",
    }
    assert run["realtimeStreams"] == ["openai"]
    assert run["metadata"] == {"progress": 1.0, "step": "Done"}

    body = read_body(http, f"/realtime/v1/streams/{run_id}/openai", token=token)
    parts = [
        json.loads(record["body"])["data"]
        for line in body.decode().splitlines()
        if line.startswith('data: {"records"')
        for record in json.loads(line.removeprefix("data: "))["records"]
    ]
    assert parts == demo_weather_parts("Lisbon")
    types = [part["type"] for part in parts]
    call, result = types.index("tool-call"), types.index("tool-result")
    assert set(types[:call]) == {"text-delta"}
    assert result == call + 1
    assert set(types[result + 1 :]) == {"text-delta"}
    assert parts[call]["toolName"] == "getWeather"
    assert parts[call]["args"] == {"location": "Lisbon"}
    assert parts[result]["toolCallId"] == parts[call]["toolCallId"]
    assert parts[result]["result"]["temperature"] == temperature
    before = "".join(part["textDelta"] for part in parts[:call])
    after = "".join(part["text"] for part in parts[result + 1 :])
    assert before == "Let me check the weather in Lisbon."
    assert after == f"The weather in Lisbon is {temperature} degrees."


def test_weather_agent_defaults_and_explicit_city(emulator):
    assert demo_weather_temperature("Paris") == demo_weather_temperature(" paris ")
    assert 5 <= demo_weather_temperature("Oslo") <= 30
    explicit, _ = emulator.trigger("demo-weather-agent", {"city": "São Paulo"})
    default, _ = emulator.trigger("demo-weather-agent", {"tokens_per_second": 0})
    assert emulator.wait_for_status(explicit, "COMPLETED_SUCCESSFULLY", 30)["output"]["city"] == (
        "São Paulo"
    )
    assert emulator.wait_for_status(default, "COMPLETED_SUCCESSFULLY", 30)["output"]["city"] == (
        "Paris"
    )
