"""The processes of the pipeline on loopback: the emulator, daphne, users with sessions, tickets.

Shared by ``bench.pipeline``, ``tests/e2e/test_soak.py`` and the browser tests (their daphne is
:class:`Daphne` too, in asyncio debug mode). Daphne runs the example project with
``bench.settings`` (``$BENCH_TRIGGER_DJANGO`` for ``TRIGGER_DJANGO``, ``$REDIS_URL`` for the Redis
channel layer) against the caller's database, whose users and sessions the caller creates here.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DAPHNE_LISTENING = re.compile(r"Listening on TCP address 127\.0\.0\.1:(\d+)")
EMULATOR_TASKS = ("--tasks-module", "bench.emulator_tasks")


class Daphne:
    """``python -m daphne`` serving example_project.asgi on a free port, in a subprocess;
    restartable on the same port (each start logs to its own file: ``daphne.log``, then
    ``daphne-2.log``, ...). The one daphne of the bench, the soak and the browser tests."""

    def __init__(self, env: dict[str, str], log_path: Path, *, devmode: bool = False) -> None:
        # asyncio debug mode (PYTHONDEVMODE) makes daphne several times slower: the bench's
        # figures and the soak's load would then be about debug mode, not about the consumer.
        # The browser tests keep it (``devmode=True``): there it catches unawaited coroutines.
        self.env = dict(env) if devmode else {k: v for k, v in env.items() if k != "PYTHONDEVMODE"}
        self.env.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
        self.env["PYTHONUNBUFFERED"] = "1"
        self.first_log = log_path
        self.log_path = log_path
        self.starts = 0
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("daphne is not running")
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/trigger/ws/"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        """The log of the current (or last) start."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self, timeout: float = 30.0) -> Daphne:
        self.starts += 1
        first = self.first_log
        if self.starts > 1:
            self.log_path = first.with_name(f"{first.stem}-{self.starts}{first.suffix}")
        with open(self.log_path, "wb") as output:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "daphne",
                    "-b",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "example_project.asgi:application",
                ],
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=REPO_ROOT,
            )
        deadline = time.monotonic() + timeout
        while not (match := DAPHNE_LISTENING.search(self.log())):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"daphne did not start:\n{self.log()}")
            time.sleep(0.05)
        self.port = int(match.group(1))
        return self

    def kill(self) -> None:
        """Stop it the hard way, as a crash or a deploy would: no close handshakes."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(10)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> Daphne:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def daphne_env(
    *, db_name: str, api_url: str, secret_key: str, trigger_django: str = "", redis_url: str = ""
) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "DJANGO_DB_NAME": db_name,
        "TRIGGER_API_URL": api_url,
        "TRIGGER_SECRET_KEY": secret_key,
        "BENCH_TRIGGER_DJANGO": trigger_django,
    }
    env.pop("REDIS_URL", None)
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


def create_sessions(count: int, prefix: str = "viewer") -> list[tuple[Any, str]]:
    """``count`` users, each logged in: ``[(user, session_key)]`` (Django must be set up)."""
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
    )
    from django.contrib.sessions.backends.db import SessionStore
    from django.db import transaction

    user_model = get_user_model()
    existing = user_model.objects.filter(username__startswith=f"{prefix}-").count()
    users = [user_model(username=f"{prefix}-{existing + k}") for k in range(count)]
    for user in users:
        user.set_unusable_password()
    with transaction.atomic():
        user_model.objects.bulk_create(users)
    users = list(user_model.objects.filter(username__in=[u.username for u in users]).order_by("pk"))
    sessions = []
    with transaction.atomic():
        for user in users:
            store = SessionStore()
            store[SESSION_KEY] = str(user.pk)
            store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
            store[HASH_SESSION_KEY] = user.get_session_auth_hash()
            store.create()
            assert store.session_key is not None
            sessions.append((user, store.session_key))
    return sessions


def cookie_header(session_key: str) -> str:
    from django.conf import settings

    return f"{settings.SESSION_COOKIE_NAME}={session_key}"


def ticket(user: Any, run_id: str, key: str = "default") -> str:
    from trigger_django.tickets import make_ticket

    return make_ticket(user_pk=user.pk, run_id=run_id, key=key)


def open_stream_reads(requests: list[dict[str, Any]]) -> int:
    """Stream reads the emulator still serves, from its request log (needs its ``open`` flag)."""
    return sum(
        1
        for r in requests
        if r["method"] == "GET" and r["path"].startswith("/realtime/v1/streams/") and r.get("open")
    )


def stream_reads(requests: list[dict[str, Any]], run_id: str, key: str = "default") -> int:
    """Upstream connections daphne made for one stream (the emulator's request log: reads with
    a token; the bench's own baseline readers use the secret key and are not counted)."""
    path = f"/realtime/v1/streams/{run_id}/{key}"
    return sum(
        1
        for r in requests
        if r["method"] == "GET" and r["path"] == path and r.get("auth") != "secret"
    )


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (`make system-deps`)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)
