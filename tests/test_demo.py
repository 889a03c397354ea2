"""`make demo`: both servers start, the page is served, and Ctrl-C stops both."""

from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import signal
import socket
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_until(fd: int, pattern: str, output: bytearray, timeout: float) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while not (match := re.search(pattern, output.decode(errors="replace"))):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {pattern!r} in the demo's output:\n{output.decode()}"
        ready, _, _ = select.select([fd], [], [], min(remaining, 0.5))
        if ready:
            with contextlib.suppress(OSError):  # the child closed the terminal
                output += os.read(fd, 65536)
    return match


def port_is_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_demo_serves_the_example_project_and_stops_on_ctrl_c(tmp_path):
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TRIGGER_")},
        "DEMO_PORT": str(port),
        "DJANGO_DB_NAME": str(tmp_path / "demo.sqlite3"),
    }
    # A terminal, so that Ctrl-C is a real SIGINT to the foreground process group.
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        # As in a terminal: a shell's background job starts with SIGINT ignored, and exec
        # would hand that down (Python then installs no KeyboardInterrupt handler).
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.chdir(ROOT)
        os.execve(sys.executable, [sys.executable, "-m", "example_project.demo"], env)
    output = bytearray()
    try:
        emulator_url = read_until(fd, r"emulator at (http://\S+)", output, 60).group(1)
        read_until(fd, r"log in as demo / demo", output, 60)
        emulator_port = int(emulator_url.rsplit(":", 1)[1])

        login = httpx.get(f"http://127.0.0.1:{port}/", follow_redirects=True, timeout=10)
        assert login.status_code == 200
        assert "Log in" in login.text
        # The login page names the demo account while the demo runs.
        assert "log in as <strong>demo / demo</strong>" in login.text
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as browser:
            page = browser.get("/login/")
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
            home = browser.post(
                "/login/",
                data={"username": "demo", "password": "demo", "csrfmiddlewaretoken": token},
                follow_redirects=True,
            )
            assert "Write with AI" in home.text

        os.write(fd, b"\x03")  # Ctrl-C
        deadline = time.monotonic() + 20
        while (waited := os.waitpid(pid, os.WNOHANG))[0] == 0:
            assert time.monotonic() < deadline, "the demo did not stop on Ctrl-C"
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:  # a read without data would block past the deadline
                with contextlib.suppress(OSError):
                    output += os.read(fd, 65536)
        assert os.waitstatus_to_exitcode(waited[1]) == 0, output.decode()
        assert not port_is_open(port), "daphne still listens after Ctrl-C"
        assert not port_is_open(emulator_port), "the emulator still listens after Ctrl-C"
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)
