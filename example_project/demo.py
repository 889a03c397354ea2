"""`make demo`: the example project on daphne, with the embedded emulator as upstream.

The upstream comes from the official SDK's variables, ``TRIGGER_API_URL`` and
``TRIGGER_SECRET_KEY``. Only when ``TRIGGER_API_URL`` is unset is the embedded emulator started
and the project pointed at it. Ctrl-C stops everything that was started.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO_USER = os.environ.get("DEMO_USER", "demo")
DEMO_PASSWORD = os.environ.get("DEMO_PASSWORD", "demo")


def _manage(*args: str, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True)


def _create_demo_user(env: dict[str, str]) -> None:
    code = (
        "from django.contrib.auth import get_user_model\n"
        "User = get_user_model()\n"
        f"user, _ = User.objects.get_or_create(username={DEMO_USER!r})\n"
        f"user.set_password({DEMO_PASSWORD!r}); user.save()\n"
    )
    _manage("shell", "-v", "0", "-c", code, env=env)


def _wait_for_port(host: str, port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(
                f"daphne exited with status {process.returncode}; see its output above"
            )
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"daphne did not accept connections on {host}:{port} within {timeout:.0f} s")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    # A SIGTERM (a supervisor, `kill`) stops the servers as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    host = os.environ.get("DEMO_HOST", "127.0.0.1")
    port = int(os.environ.get("DEMO_PORT", "8000"))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "example_project.settings",
        "EXAMPLE_DEMO_LOGIN": f"{DEMO_USER} / {DEMO_PASSWORD}",
    }
    embedded = not env.get("TRIGGER_API_URL")
    if embedded:
        # The emulator accepts whatever key it is started with; the project gets the same one.
        env.setdefault("TRIGGER_SECRET_KEY", f"tr_dev_{secrets.token_hex(20)}")
    _manage("migrate", "--noinput", "-v", "0", env=env)
    _create_demo_user(env)

    with ExitStack() as stack:
        if embedded:
            from trigger_django.emulator.testing import EmulatorProcess

            emulator = stack.enter_context(EmulatorProcess(secret_key=env["TRIGGER_SECRET_KEY"]))
            env["TRIGGER_API_URL"] = emulator.url
            print(f"Embedded Trigger.dev emulator at {emulator.url}")
        else:
            print(f"Using the Trigger.dev API at {env['TRIGGER_API_URL']}")

        daphne = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                host,
                "-p",
                str(port),
                "example_project.asgi:application",
            ],
            cwd=ROOT,
            env=env,
        )
        stack.callback(_stop, daphne)
        _wait_for_port(host, port, daphne, timeout=20)
        print()
        print(f"  Open http://{host}:{port}/ and log in as {DEMO_USER} / {DEMO_PASSWORD}")
        print("  Press Ctrl-C to stop.")
        print()
        try:
            daphne.wait()
        except KeyboardInterrupt:
            print("\nStopping…")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


if __name__ == "__main__":
    main()
