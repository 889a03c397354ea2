"""Input streams and the simulated tasks that wait for them."""

from __future__ import annotations

import json

from trigger_django.emulator import demo_answer_text, demo_answer_tokens

from .conftest import AUTH, UNREGISTERED_TASK, bearer, read_bodies


def _parts(body: bytes) -> list[object]:
    parts = []
    for line in body.decode().splitlines():
        if line.startswith('data: {"records"'):
            for record in json.loads(line.removeprefix("data: "))["records"]:
                parts.append(json.loads(record["body"])["data"])
    return parts


def test_demo_answer_is_deterministic_and_tokenised():
    tokens = demo_answer_tokens("How do I stream with Django?")
    assert "".join(tokens) == demo_answer_text("How do I stream with Django?")
    assert 60 <= len(tokens) <= 120
    assert tokens == demo_answer_tokens("How do I stream with Django?")
    assert tokens != demo_answer_tokens("Something else entirely")
    assert "**How do I stream with Django?**" in demo_answer_text("How do I stream with Django?")


async def test_demo_ai_writer_streams_then_waits_for_approval(emulator, http):
    prompt = "Explain server-sent events"
    run_id, token = emulator.trigger(
        "demo-ai-writer", {"prompt": prompt, "tokens_per_second": 100_000}
    )
    emulator.wait_for(lambda: emulator.run(run_id)["metadata"].get("stage") == "awaiting-approval")

    decision = {"approved": True, "reviewer": "Ada"}
    sent = http.post(
        f"/realtime/v1/streams/{run_id}/input/approval",
        json={"data": decision},
        headers=bearer(token),
    )
    assert (sent.status_code, sent.json()) == (200, {"ok": True})

    run = emulator.wait_for(
        lambda: (r := emulator.run(run_id))["status"] == "COMPLETED_SUCCESSFULLY" and r
    )
    assert run["output"] == {"approved": True, "reviewer": "Ada"}
    assert run["inputs"][0]["streamId"] == "approval"
    assert run["inputs"][0]["data"] == decision
    assert run["inputs"][0]["id"].startswith("inp_")
    assert len(run["inputs"][0]["id"]) == 16
    assert run["realtimeStreams"] == ["ai-output"]

    output, inputs = await read_bodies(
        emulator.url,
        [
            (f"/realtime/v1/streams/{run_id}/ai-output", bearer(token)),
            (f"/realtime/v1/streams/{run_id}/input/approval", bearer(token)),
        ],
    )
    assert "".join(_parts(output)) == demo_answer_text(prompt) + "\n\nApproved by Ada."
    assert _parts(output)[:-1] == demo_answer_tokens(prompt)
    # The input stream holds JSON.stringify(data): a string, with the inp_ record id.
    (line,) = [line for line in inputs.decode().splitlines() if line.startswith('data: {"records"')]
    (record,) = json.loads(line.removeprefix("data: "))["records"]
    envelope = json.loads(record["body"])
    assert envelope == {"data": '{"approved":true,"reviewer":"Ada"}', "id": run["inputs"][0]["id"]}


def test_demo_ai_writer_rejection(emulator, http):
    run_id, token = emulator.trigger(
        "demo-ai-writer", {"prompt": "x", "tokens_per_second": 100_000}
    )
    # Sent before the task waits: the input is buffered, like the SDK's input manager does.
    http.post(
        f"/realtime/v1/streams/{run_id}/input/approval",
        json={"data": {"approved": False, "reviewer": "Grace"}},
        headers=bearer(token),
    )
    run = emulator.wait_for(
        lambda: (r := emulator.run(run_id))["status"] == "COMPLETED_SUCCESSFULLY" and r
    )
    assert run["output"] == {"approved": False}
    assert run["streams"]["ai-output"] == len(demo_answer_tokens("x")) + 1


def test_input_send_errors(emulator, http):
    run_id, token = emulator.trigger(UNREGISTERED_TASK, {})
    url = f"/realtime/v1/streams/{run_id}/input/approval"

    missing = http.post(
        "/realtime/v1/streams/run_nope/input/approval", json={"data": 1}, headers=AUTH
    )
    assert (missing.status_code, missing.json()) == (404, {"ok": False, "error": "Run not found"})
    for bad_body in (b"not json", b"[1, 2]"):
        invalid = http.post(url, content=bad_body, headers=AUTH)
        assert (invalid.status_code, invalid.json()) == (
            400,
            {"ok": False, "error": "Invalid request body"},
        )
    too_big = http.post(url, json={"data": "x" * (1024 * 1024)}, headers=AUTH)
    assert (too_big.status_code, too_big.json()) == (413, {"error": "Request body too large"})

    def chunked():
        yield b'{"data": 1}'

    no_length = http.post(url, content=chunked(), headers=AUTH)
    assert no_length.status_code == 413
    read_only = http.post(url, json={"data": 1}, headers=bearer(_read_only_token(http, run_id)))
    assert read_only.status_code == 403
    assert http.post(url, json={"data": None}, headers=bearer(token)).json() == {"ok": True}
    # Input streams are not output streams: they are not listed in realtimeStreams.
    run = emulator.run(run_id)
    assert run["realtimeStreams"] == []
    assert run["inputStreams"] == {"approval": 1}
    assert run["inputs"][0]["data"] is None


def _read_only_token(http, run_id: str) -> str:
    response = http.post(
        "/api/v1/auth/public-tokens", json={"scopes": [f"read:runs:{run_id}"]}, headers=AUTH
    )
    return str(response.json()["token"])


async def test_input_stream_on_a_v1_run_uses_v1_framing(emulator_v1, http_v1):
    run_id, token = emulator_v1.trigger(UNREGISTERED_TASK, {})
    http_v1.post(
        f"/realtime/v1/streams/{run_id}/input/answers",
        json={"data": {"a": 1, "é": "ü"}},
        headers=bearer(token),
    )
    (body,) = await read_bodies(
        emulator_v1.url, [(f"/realtime/v1/streams/{run_id}/input/answers", bearer(token))]
    )
    (entry_id,) = [line.removeprefix("id: ") for line in body.decode().splitlines()[:1]]
    assert body == f'id: {entry_id}\ndata: "{{\\"a\\":1,\\"é\\":\\"ü\\"}}"\n\n'.encode()
