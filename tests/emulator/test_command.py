"""The ``trigger_emulator`` command as a process: its output, options, keep-alives and stopping."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from trigger_django.emulator.testing import EmulatorProcess

from .conftest import AUTH, SECRET, UNREGISTERED_TASK, read_bodies

REPO_ROOT = Path(__file__).resolve().parents[2]

LISTENING = re.compile(r"^Trigger\.dev emulator listening on http://127\.0\.0\.1:(\d+)$")


@pytest.fixture(scope="module")
def fast_pings():
    with EmulatorProcess(
        secret_key=SECRET,
        stream_version="v1",
        extra_args=("--ping-interval", "0.2", "--tasks-module", "tests.emulator.extra_tasks"),
    ) as process:
        yield process


def test_prints_exactly_one_listening_line(fast_pings):
    stdout, stderr = fast_pings.output()
    lines = stdout.splitlines()
    assert len(lines) == 1
    match = LISTENING.match(lines[0])
    assert match
    assert int(match.group(1)) > 0
    assert fast_pings.url == f"http://127.0.0.1:{match.group(1)}"
    assert "listening" not in stderr
    assert SECRET not in stdout + stderr


async def test_keep_alive_pings_in_both_framings(fast_pings):
    v1_run, _ = fast_pings.trigger(UNREGISTERED_TASK, {})
    v2_run, _ = fast_pings.trigger(UNREGISTERED_TASK, {}, stream_version="v2")

    v1_body, v2_body = await read_bodies(
        fast_pings.url,
        [
            (f"/realtime/v1/streams/{v1_run}/quiet", {}),
            (f"/realtime/v1/streams/{v2_run}/quiet", {}),
        ],
    )

    v1_events = v1_body.decode().split("\n\n")
    assert v1_events[-1] == ""
    assert set(v1_events[:-1]) == {": ping"}
    v2_events = v2_body.decode().split("\n\n")
    assert v2_events[-2:] == ["data: [DONE]", ""]
    assert v2_events[:-2]
    for event in v2_events[:-2]:
        # s2-lite pings carry the tail; this stream was never written.
        assert re.fullmatch(
            r'event: ping\ndata: \{"timestamp":\d{13},"tail":\{"seq_num":0,"timestamp":0\}\}',
            event,
        )


def test_tasks_module_registers_simulated_tasks(fast_pings):
    replied, token = fast_pings.trigger("shout-and-wait", {"text": "hello big world"})
    fast_pings.wait_for(lambda: fast_pings.run(replied)["streams"].get("loud") == 3)
    httpx.post(
        f"{fast_pings.url}/realtime/v1/streams/{replied}/input/reply",
        json={"data": "hi"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert fast_pings.wait_for_status(replied, "COMPLETED_SUCCESSFULLY")["output"] == {
        "reply": "hi"
    }

    silent, _ = fast_pings.trigger("shout-and-wait", {"text": "", "wait": 0.05})
    run = fast_pings.wait_for_status(silent, "COMPLETED_WITH_ERRORS")
    assert run["error"] == {"type": "STRING_ERROR", "raw": "no reply"}


def _spawn(tmp_path: Path, *args: str, env_key: str | None = None) -> tuple[subprocess.Popen, Path]:
    env = {k: v for k, v in os.environ.items() if k not in ("TRIGGER_SECRET_KEY", "PYTHONDEVMODE")}
    if env_key:
        env["TRIGGER_SECRET_KEY"] = env_key
    env["DJANGO_SETTINGS_MODULE"] = "example_project.settings"
    stdout = tmp_path / "stdout"
    with stdout.open("ab") as out, (tmp_path / "stderr").open("ab") as err:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "trigger_emulator", "--port", "0", *args],
            cwd=REPO_ROOT,
            stdout=out,
            stderr=err,
            env=env,
        )
    return process, stdout


def _wait_listening(process: subprocess.Popen, stdout: Path) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = LISTENING.match(stdout.read_text().strip())
        if match:
            return f"http://127.0.0.1:{match.group(1)}"
        assert process.poll() is None, "the emulator exited early"
        time.sleep(0.02)
    raise TimeoutError("no listening line")


def test_generated_key_goes_to_stderr_and_sigterm_stops_cleanly(tmp_path):
    process, stdout = _spawn(tmp_path, "--stream-version", "v2")
    try:
        url = _wait_listening(process, stdout)
        stderr = (tmp_path / "stderr").read_text()
        match = re.search(r"^Generated secret key: (tr_dev_\S+)$", stderr, flags=re.MULTILINE)
        assert match
        key = match.group(1)
        assert key not in stdout.read_text()
        claims = httpx.post(
            f"{url}/api/v1/auth/jwt/claims", headers={"Authorization": f"Bearer {key}"}
        )
        assert claims.status_code == 200
        assert httpx.post(f"{url}/api/v1/auth/jwt/claims", headers=AUTH).status_code == 401
    finally:
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(15)
    assert returncode == 0


def test_secret_key_from_environment(tmp_path):
    env_key = "tr_dev_from_the_environment_0123456789abcdef"
    process, stdout = _spawn(tmp_path, env_key=env_key)
    try:
        url = _wait_listening(process, stdout)
        headers = {"Authorization": f"Bearer {env_key}"}
        assert httpx.post(f"{url}/api/v1/auth/jwt/claims", headers=headers).status_code == 200
        assert "Generated" not in (tmp_path / "stderr").read_text()
    finally:
        process.send_signal(signal.SIGINT)
        returncode = process.wait(15)
    assert returncode == 0


def test_sigterm_with_an_open_stream_stops_promptly(tmp_path):
    process, stdout = _spawn(tmp_path, "--secret-key", SECRET)
    url = _wait_listening(process, stdout)
    run = httpx.post(
        f"{url}/api/v1/tasks/{UNREGISTERED_TASK}/trigger", json={"payload": {}}, headers=AUTH
    ).json()
    with httpx.stream(
        "GET",
        f"{url}/realtime/v1/streams/{run['id']}/out",
        headers={**AUTH, "Timeout-Seconds": "600"},
        timeout=httpx.Timeout(10.0, read=20.0),
    ) as response:
        assert response.status_code == 200
        process.send_signal(signal.SIGTERM)
        # Dropped like a real server going away (not a clean end), so clients reconnect.
        with pytest.raises(httpx.RemoteProtocolError):
            response.read()
    assert process.wait(15) == 0
    assert "Error" not in (tmp_path / "stderr").read_text()


def test_bad_options_are_explained(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "trigger_emulator", "--idle-timeout", "-3"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "--idle-timeout: must be greater than 0" in result.stderr


def test_python_m_serves_it_without_a_project(tmp_path):
    """``python -m trigger_django.emulator`` from any directory, with no Django settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TRIGGER_SECRET_KEY", "PYTHONDEVMODE", "DJANGO_SETTINGS_MODULE", "PYTHONPATH")
    }
    stdout = tmp_path / "stdout"
    command = [sys.executable, "-m", "trigger_django.emulator", "--port", "0"]
    with stdout.open("ab") as out, (tmp_path / "stderr").open("ab") as err:
        process = subprocess.Popen(
            [*command, "--secret-key", SECRET],
            cwd=tmp_path,
            stdout=out,
            stderr=err,
            env=env,
        )
    try:
        url = _wait_listening(process, stdout)
        # The same single ready line as manage.py trigger_emulator.
        assert LISTENING.match(stdout.read_text().strip())
        run = httpx.post(
            f"{url}/api/v1/tasks/echo-parts/trigger",
            json={"payload": {"parts": ["a", "b"]}},
            headers=AUTH,
        )
        assert run.status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(15)
    assert returncode == 0


def test_python_m_explains_bad_options(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "trigger_django.emulator", "--port", "70000"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--port: must be between 0 and 65535, got 70000" in result.stderr
