"""Run the emulator as a child process, for tests, benchmarks and the demo.

>>> with EmulatorProcess(secret_key="tr_dev_…", stream_version="v2") as emulator:
...     run_id, token = emulator.trigger("echo-parts", {"parts": [1, 2, 3]})

The child is ``python -m trigger_django.emulator``: it needs only the installed package, not a
project or a repository checkout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx

from trigger_django.emulator.server import LISTENING_MESSAGE

#: Imported by the child so that scripted runs work (trigger_django/testing/scripted.py).
SCRIPTED_TASKS_MODULE = "trigger_django.testing.scripted"
_SCRIPTS_DIR_ENV = "TRIGGER_DJANGO_EMULATOR_SCRIPTS"
_LISTENING_PREFIX = LISTENING_MESSAGE.split("{", 1)[0]
_T = TypeVar("_T")


class EmulatorError(RuntimeError):
    """The emulator process could not start, or a control call failed."""


Steps = Sequence[Mapping[str, Any]]


class EmulatorProcess:
    """``python -m trigger_django.emulator --port 0`` in a child process, plus control helpers.

    ``cwd`` is the child's working directory (default: the current one), from which
    ``--tasks-module`` modules are imported. The child runs without Django settings (the
    emulator needs neither a database nor a URLconf).
    """

    def __init__(
        self,
        secret_key: str = "tr_dev_emulator_process_secret_key_0123456789",
        stream_version: str = "v2",
        extra_args: Iterable[str] = (),
        *,
        startup_timeout: float = 30.0,
        cwd: str | Path | None = None,
    ) -> None:
        self.secret_key = secret_key
        self.stream_version = stream_version
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self.cwd = Path(cwd) if cwd is not None else Path.cwd()
        self.url = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._output_dir: tempfile.TemporaryDirectory[str] | None = None
        self._client: httpx.Client | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> EmulatorProcess:
        if self._process is not None:
            raise EmulatorError("The emulator is already started.")
        # Files, not pipes: nobody drains a pipe while tests run, and a full pipe blocks the child.
        self._output_dir = tempfile.TemporaryDirectory(prefix="trigger-emulator-")
        self._path("scripts").mkdir()
        command = [
            sys.executable,
            "-m",
            "trigger_django.emulator",
            "--tasks-module",
            SCRIPTED_TASKS_MODULE,
            "--port",
            "0",
            "--secret-key",
            self.secret_key,
            "--stream-version",
            self.stream_version,
            *self.extra_args,
        ]
        # The emulator is test infrastructure, not code under test: asyncio debug mode (which
        # PYTHONDEVMODE turns on) would only make it several times slower.
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONDEVMODE", "DJANGO_SETTINGS_MODULE")
        }
        env["PYTHONUNBUFFERED"] = "1"
        env[_SCRIPTS_DIR_ENV] = str(self._path("scripts"))
        with self._path("stdout").open("ab") as stdout, self._path("stderr").open("ab") as stderr:
            self._process = subprocess.Popen(
                command,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                env=env,
            )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            line = self._listening_line()
            if line:
                self.url = line.removeprefix(_LISTENING_PREFIX).strip()
                break
            if self._process.poll() is not None:
                output = self._read("stderr")
                self._cleanup_files()
                self._process = None
                raise EmulatorError(f"The emulator exited at startup:\n{output}")
            if time.monotonic() > deadline:
                self.stop()
                raise EmulatorError(
                    f"The emulator did not print its listening line within "
                    f"{self.startup_timeout} s."
                )
            time.sleep(0.02)
        self._client = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.secret_key}"},
            timeout=10.0,
        )
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate (SIGTERM) and wait; kill if it does not exit within ``timeout``."""
        if self._client is not None:
            self._client.close()
            self._client = None
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._cleanup_files()

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def output(self) -> tuple[str, str]:
        """What the process printed so far on stdout and stderr."""
        return self._read("stdout"), self._read("stderr")

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- control API ------------------------------------------------------------------------

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            raise EmulatorError("The emulator is not running.")
        return self._client

    def trigger(
        self, task_id: str, payload: Any, *, stream_version: str | None = None, **options: Any
    ) -> tuple[str, str]:
        """Trigger ``task_id`` with a JSON payload; returns ``(run_id, public_token)``."""
        headers = {}
        if stream_version is not None:
            headers["x-trigger-realtime-streams-version"] = stream_version
        body: dict[str, Any] = {"payload": payload}
        if options:
            body["options"] = options
        response = self.client.post(f"/api/v1/tasks/{task_id}/trigger", json=body, headers=headers)
        self._check(response)
        return str(response.json()["id"]), response.headers["x-trigger-jwt"]

    def script_task(self, task_id: str, steps: Steps | Any) -> None:
        """Make every run of ``task_id`` triggered from now on play ``steps`` (a
        :class:`trigger_django.testing.Script` or a list of step dicts, see
        ``trigger_django/testing/scripted.py``) instead of staying ``EXECUTING``."""
        from trigger_django.testing.scripted import check_steps, script_path

        checked = check_steps(_steps(steps))
        target = script_path(self._path("scripts"), task_id)
        # Written whole, then renamed: a trigger never reads half a script.
        partial = target.with_suffix(".partial")
        partial.write_text(json.dumps({"steps": checked}))
        partial.replace(target)

    def unscript_task(self, task_id: str) -> None:
        """Forget the script of ``task_id``; its later runs stay ``EXECUTING`` again."""
        from trigger_django.testing.scripted import script_path

        script_path(self._path("scripts"), task_id).unlink(missing_ok=True)

    def trigger_script(
        self, steps: Steps | Any, *, stream_version: str | None = None
    ) -> tuple[str, str]:
        """Trigger a run that plays ``steps``; returns ``(run_id, public_token)``."""
        from trigger_django.testing.scripted import SCRIPT_TASK, check_steps

        payload = {"steps": check_steps(_steps(steps))}
        return self.trigger(SCRIPT_TASK, payload, stream_version=stream_version)

    def inject_fault(self, run_id: str, key: str, kind: str, **options: Any) -> None:
        """See docs/emulator.md: kinds ``drop``, ``status``, ``stall``, ``malformed``."""
        response = self.client.post(
            "/_emulator/faults", json={"run_id": run_id, "key": key, "kind": kind, **options}
        )
        self._check(response)

    def requests(self) -> list[dict[str, Any]]:
        response = self.client.get("/_emulator/requests")
        self._check(response)
        result: list[dict[str, Any]] = response.json()
        return result

    def clear_requests(self) -> None:
        self._check(self.client.delete("/_emulator/requests"))

    def run(self, run_id: str) -> dict[str, Any]:
        response = self.client.get(f"/_emulator/runs/{run_id}")
        self._check(response)
        result: dict[str, Any] = response.json()
        return result

    def complete_run(self, run_id: str, output: Any = None) -> dict[str, Any]:
        response = self.client.post(f"/_emulator/runs/{run_id}/complete", json={"output": output})
        self._check(response)
        result: dict[str, Any] = response.json()
        return result

    def wait_for(
        self, predicate: Callable[[], _T | None], timeout: float = 10.0, interval: float = 0.02
    ) -> _T:
        """Call ``predicate`` until it returns something truthy; return that, or time out."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"Condition not met within {timeout} s.")
            time.sleep(interval)

    def wait_for_status(self, run_id: str, status: str, timeout: float = 10.0) -> dict[str, Any]:
        """Wait until the run has ``status`` (e.g. ``COMPLETED_SUCCESSFULLY``); return it."""

        def reached() -> dict[str, Any] | None:
            run = self.run(run_id)
            return run if run["status"] == status else None

        return self.wait_for(reached, timeout)

    # -- internals --------------------------------------------------------------------------

    @staticmethod
    def _check(response: httpx.Response) -> None:
        if response.is_error:
            raise EmulatorError(
                f"{response.request.method} {response.request.url.path} answered "
                f"{response.status_code}: {response.text}"
            )

    def _listening_line(self) -> str | None:
        for line in self._read("stdout").splitlines():
            if line.startswith(_LISTENING_PREFIX):
                return line
        return None

    def _path(self, name: str) -> Path:
        if self._output_dir is None:
            raise EmulatorError("The emulator is not started.")
        return Path(self._output_dir.name) / name

    def _read(self, name: str) -> str:
        if self._output_dir is None:
            return ""
        try:
            return self._path(name).read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def _cleanup_files(self) -> None:
        if self._output_dir is not None:
            self._output_dir.cleanup()
            self._output_dir = None


def _steps(steps: Steps | Any) -> list[dict[str, Any]]:
    return [dict(step) for step in getattr(steps, "steps", steps)]
