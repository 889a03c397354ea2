"""Drives the official Trigger.dev Node SDK (the `.mjs` scripts next to this file) from pytest.

Every script reads one JSON document on stdin and prints one JSON document on stdout; the tests
assert on it. Missing Node dependencies FAIL the tests (run `make node-deps`), they never skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from trigger_django.emulator.testing import EmulatorProcess

CONFORMANCE_DIR = Path(__file__).resolve().parent
NODE_MODULES = CONFORMANCE_DIR / "node_modules"
SDK_VERSION = "4.8.3"
PINNED_PACKAGES = ("@trigger.dev/core", "@trigger.dev/sdk")
# Per node process; a hang inside the SDK fails fast with its output shown.
DEFAULT_NODE_TIMEOUT = 60.0
# Environment the SDK reads; every run sets the ones it needs explicitly and drops the rest.
SDK_ENVIRONMENT_PREFIXES = ("TRIGGER_",)

FRAMINGS = ("v1", "v2")
RUN_STATUS_TIMEOUT = 30.0


def _check_node_sdk() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            "`node` is not on PATH: the conformance suite needs Node >= 18.20", pytrace=False
        )
    for package in PINNED_PACKAGES:
        manifest = NODE_MODULES / package / "package.json"
        if not manifest.is_file():
            pytest.fail(
                f"{package} is not installed in tests/conformance/node_modules: "
                "run `make node-deps` (npm ci from the committed package-lock.json)",
                pytrace=False,
            )
        version = json.loads(manifest.read_text())["version"]
        if version != SDK_VERSION:
            pytest.fail(
                f"{package} is {version} but the suite pins {SDK_VERSION}: run `make node-deps`",
                pytrace=False,
            )
    return node


class NodeScriptError(AssertionError):
    pass


@dataclass(frozen=True, slots=True)
class NodeSdk:
    node: str

    def run(
        self,
        script: str,
        payload: dict[str, Any],
        *,
        api_url: str,
        secret_key: str,
        stream_version: str = "v2",
        timeout: float = DEFAULT_NODE_TIMEOUT,
    ) -> dict[str, Any]:
        """Run `script` with `payload` on stdin; return its JSON result or fail with its output."""
        if stream_version not in FRAMINGS:
            raise ValueError(f"stream_version must be one of {FRAMINGS}, not {stream_version!r}")
        environment = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(SDK_ENVIRONMENT_PREFIXES)
        }
        environment.update(
            TRIGGER_API_URL=api_url,
            TRIGGER_SECRET_KEY=secret_key,
            # The SDK sends x-trigger-realtime-streams-version: v1 only when this is "0".
            TRIGGER_V2_REALTIME_STREAMS="1" if stream_version == "v2" else "0",
            NODE_NO_WARNINGS="1",
        )
        try:
            completed = subprocess.run(
                [self.node, str(CONFORMANCE_DIR / script)],
                input=json.dumps(payload).encode(),
                capture_output=True,
                cwd=CONFORMANCE_DIR,
                env=environment,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as expired:
            raise NodeScriptError(
                f"{script} did not finish within {timeout} s\n"
                f"--- stdout ---\n{_tail(expired.stdout)}\n--- stderr ---\n{_tail(expired.stderr)}"
            ) from None
        stdout = completed.stdout.decode("utf-8", errors="replace")
        stderr = completed.stderr.decode("utf-8", errors="replace")
        if completed.returncode != 0:
            raise NodeScriptError(
                f"{script} exited with {completed.returncode}\n"
                f"--- stdout ---\n{_tail(stdout)}\n--- stderr ---\n{_tail(stderr)}"
            )
        try:
            result: dict[str, Any] = json.loads(stdout)
        except ValueError:
            raise NodeScriptError(
                f"{script} printed something that is not one JSON document\n"
                f"--- stdout ---\n{_tail(stdout)}\n--- stderr ---\n{_tail(stderr)}"
            ) from None
        return result


def _tail(output: bytes | str | None, limit: int = 4000) -> str:
    if output is None:
        return ""
    text = output.decode("utf-8", errors="replace") if isinstance(output, bytes) else output
    return text if len(text) <= limit else "…" + text[-limit:]


@pytest.fixture(scope="session")
def node_sdk() -> NodeSdk:
    return NodeSdk(node=_check_node_sdk())


@dataclass(frozen=True, slots=True)
class FramedEmulator:
    """One emulator process whose runs default to `framing`, as the real server's default.

    The SDK sends `x-trigger-realtime-streams-version: v1` when TRIGGER_V2_REALTIME_STREAMS=0; the
    server (and the emulator) treat anything but "v2" as "use the default", so v1 runs from
    `tasks.trigger` need an emulator whose default is v1.
    """

    framing: str
    process: EmulatorProcess

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def secret_key(self) -> str:
        return self.process.secret_key

    def trigger(self, task_id: str, payload: Any) -> tuple[str, str]:
        run_id, token = self.process.trigger(task_id, payload, stream_version=self.framing)
        framing = self.run(run_id)["streamVersion"]
        assert framing == self.framing, (
            f"{task_id} run {run_id} is on {framing}, not {self.framing}"
        )
        return run_id, token

    def run(self, run_id: str) -> dict[str, Any]:
        return self.process.run(run_id)

    def complete_run(self, run_id: str) -> dict[str, Any]:
        return self.process.complete_run(run_id)

    def wait_for_status(self, run_id: str, status: str) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            run = self.run(run_id)
            return run if run["status"] == status else None

        try:
            return self.process.wait_for(reached, timeout=RUN_STATUS_TIMEOUT)
        except TimeoutError:
            run = self.run(run_id)
            raise AssertionError(
                f"run {run_id} ({run['taskIdentifier']}) is still {run['status']} after "
                f"{RUN_STATUS_TIMEOUT} s, expected {status}; inputs {run['inputs']}"
            ) from None

    def node(
        self,
        node_sdk: NodeSdk,
        script: str,
        payload: dict[str, Any],
        *,
        timeout: float = DEFAULT_NODE_TIMEOUT,
    ) -> dict[str, Any]:
        return node_sdk.run(
            script,
            payload,
            api_url=self.url,
            secret_key=self.secret_key,
            stream_version=self.framing,
            timeout=timeout,
        )


@pytest.fixture(scope="session")
def emulators(emulator: EmulatorProcess, emulator_v1: EmulatorProcess) -> dict[str, FramedEmulator]:
    """The session emulators by framing: runs on "v1" use Redis framing, on "v2" S2 framing."""
    return {"v1": FramedEmulator("v1", emulator_v1), "v2": FramedEmulator("v2", emulator)}
