"""``GET /realtime/v1/runs/{run}``: the single-run Electric shape the SDK subscribes to."""

from __future__ import annotations

import asyncio
import json
import re

import httpx

from .conftest import AUTH, SECRET, UNREGISTERED_TASK, bearer, electric

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}$")


def test_initial_request_is_an_insert_then_up_to_date(emulator, http):
    run_id, token = emulator.trigger(UNREGISTERED_TASK, {"q": 1}, tags=["team:a", 'say "hi"'])

    response = http.get(
        f"/realtime/v1/runs/{run_id}",
        params={"log": "full", "offset": "-1", "skipColumns": "payload,id"},
        headers=electric(token),
    )

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["access-control-expose-headers"] == "*"
    assert re.fullmatch(r"\d+_\d+", response.headers["electric-offset"])
    assert response.headers["electric-handle"].startswith("run-")
    schema = json.loads(response.headers["electric-schema"])
    assert "payload" not in schema
    assert schema["id"] == {"type": "text"}  # reserved: never skipped
    assert schema["runTags"] == {"type": "text", "dims": 1}
    assert schema["isTest"] == {"type": "bool"}
    insert, up_to_date = response.json()
    assert up_to_date == {"headers": {"control": "up-to-date"}}
    assert insert["headers"] == {"operation": "insert"}
    value = insert["value"]
    assert insert["key"] == f'"public"."TaskRun"/"{value["id"]}"'
    assert list(value) == list(schema)
    assert value["friendlyId"] == run_id
    assert value["taskIdentifier"] == UNREGISTERED_TASK
    assert value["status"] == "EXECUTING"
    assert value["isTest"] == "f"
    assert TIMESTAMP.match(value["createdAt"])
    assert value["completedAt"] is None
    assert value["runTags"] == '{"team:a","say \\"hi\\""}'
    assert value["realtimeStreams"] == "{}"
    assert all(v is None or isinstance(v, str) for v in value.values())


async def test_live_request_waits_for_the_next_change(emulator):
    run_id, token = emulator.trigger(UNREGISTERED_TASK, {})
    async with httpx.AsyncClient(base_url=emulator.url, timeout=10.0) as client:
        initial = await client.get(f"/realtime/v1/runs/{run_id}", headers=electric(token))
        offset = initial.headers["electric-offset"]
        handle = initial.headers["electric-handle"]
        live = asyncio.create_task(
            client.get(
                f"/realtime/v1/runs/{run_id}",
                params={"live": "true", "offset": offset, "handle": handle, "cursor": ""},
                headers=electric(token),
            )
        )
        # Wait until the live request is parked before changing the run.
        await asyncio.to_thread(
            emulator.wait_for,
            lambda: any(
                r["path"] == f"/realtime/v1/runs/{run_id}" and "live=true" in r["query"]
                for r in emulator.requests()
            ),
        )
        await client.put(f"/realtime/v1/streams/{run_id}/self/answer", headers=AUTH)
        response = await live

    assert response.status_code == 200
    assert "electric-cursor" in response.headers
    assert "electric-schema" not in response.headers
    assert response.headers["electric-offset"] != offset
    update, up_to_date = response.json()
    assert update["headers"] == {"operation": "update"}
    assert update["value"]["realtimeStreams"] == '{"answer"}'
    assert up_to_date == {"headers": {"control": "up-to-date"}}


def test_live_request_behind_the_run_answers_at_once(emulator, http):
    run_id, token = emulator.trigger(UNREGISTERED_TASK, {})
    initial = http.get(f"/realtime/v1/runs/{run_id}", headers=electric(token)).headers
    emulator.complete_run(run_id, output={"done": True})

    response = http.get(
        f"/realtime/v1/runs/{run_id}",
        params={
            "live": "true",
            "offset": initial["electric-offset"],
            "handle": initial["electric-handle"],
        },
        headers=electric(token),
    )
    assert response.json()[0]["headers"] == {"operation": "update"}

    value = response.json()[0]["value"]
    assert value["status"] == "COMPLETED_SUCCESSFULLY"
    assert TIMESTAMP.match(value["completedAt"])
    assert value["output"] == '{"done":true}'
    assert value["outputType"] == "application/json"


def test_run_shape_auth(emulator, http):
    run_id, _ = emulator.trigger(UNREGISTERED_TASK, {})
    _, other_token = emulator.trigger(UNREGISTERED_TASK, {})
    denied = http.get(f"/realtime/v1/runs/{run_id}", headers=electric(other_token))
    assert denied.status_code == 403
    missing = http.get("/realtime/v1/runs/run_missing", headers=AUTH)
    assert (missing.status_code, missing.json()) == (404, {"error": "Not found"})


def test_failed_run_carries_a_task_run_error(emulator, http):
    run_id, token = emulator.trigger("echo-parts", {"parts": "not a list"})
    emulator.wait_for(lambda: emulator.run(run_id)["status"] == "COMPLETED_WITH_ERRORS")
    value = http.get(f"/realtime/v1/runs/{run_id}", headers=electric(token)).json()[0]["value"]
    error = json.loads(value["error"])
    assert error["type"] == "BUILT_IN_ERROR"
    assert error["name"] == "TypeError"
    assert error["message"] == "echo-parts: payload 'parts' must be a list."
    assert "Traceback" in error["stackTrace"]


def test_a_client_without_the_electric_version_gets_the_legacy_header_names(emulator, http):
    run_id, token = emulator.trigger(UNREGISTERED_TASK, {})
    initial = http.get(f"/realtime/v1/runs/{run_id}", headers=bearer(token))
    assert "electric-offset" not in initial.headers
    assert "electric-handle" not in initial.headers
    offset = initial.headers["electric-chunk-last-offset"]
    handle = initial.headers["electric-shape-id"]
    assert handle == emulator.run(run_id)["shapeHandle"]
    emulator.complete_run(run_id)
    # The legacy `shape_id` parameter names the handle.
    live = http.get(
        f"/realtime/v1/runs/{run_id}",
        params={"live": "true", "offset": offset, "shape_id": handle},
        headers=bearer(token),
    )
    assert live.headers["electric-shape-id"] == handle
    assert live.headers["electric-chunk-last-offset"] != offset
    assert live.json()[0]["value"]["status"] == "COMPLETED_SUCCESSFULLY"


async def test_a_live_request_with_no_change_answers_up_to_date_after_the_hold(monkeypatch):
    """In process, with the 20 s hold shortened: nothing changed, so the same offset."""
    from trigger_django.emulator import EmulatorApp, EmulatorConfig, shapes

    monkeypatch.setattr(shapes, "LIVE_HOLD_SECONDS", 0.05)
    app = EmulatorApp(EmulatorConfig(secret_key=SECRET))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://emulator") as client:
        triggered = await client.post(
            f"/api/v1/tasks/{UNREGISTERED_TASK}/trigger", json={"payload": {}}, headers=AUTH
        )
        run_id = triggered.json()["id"]
        initial = await client.get(f"/realtime/v1/runs/{run_id}", headers=electric(SECRET))
        params = {
            "live": "true",
            "offset": initial.headers["electric-offset"],
            "handle": initial.headers["electric-handle"],
            "cursor": "",
        }
        first = await client.get(
            f"/realtime/v1/runs/{run_id}", params=params, headers=electric(SECRET)
        )
        second = await client.get(
            f"/realtime/v1/runs/{run_id}", params=params, headers=electric(SECRET)
        )
    for response in (first, second):
        assert response.status_code == 200
        assert response.json() == [{"headers": {"control": "up-to-date"}}]
        assert response.headers["electric-offset"] == params["offset"]
        assert response.headers["electric-handle"] == params["handle"]
    # A new cursor each time, as Electric's live responses carry.
    assert first.headers["electric-cursor"] != second.headers["electric-cursor"]
