"""The production configuration: the example project under daphne on a real Redis channel layer
(channels_redis), as docs/installation.md recommends for several workers."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from bench.stack import Daphne
from tests.e2e.conftest import RECORDER
from trigger_django.emulator.tasks import demo_answer_tokens

pytestmark = [pytest.mark.browser, pytest.mark.redis, pytest.mark.django_db(transaction=True)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    server = shutil.which("redis-server")
    assert server, "redis-server is not installed: `make test` installs Debian's redis-server"
    port = free_port()
    process = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
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
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


async def redis_info(url: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "redis-cli", "-u", url, "INFO", "stats", stdout=asyncio.subprocess.PIPE
    )
    output, _ = await process.communicate()
    return output.decode()


async def test_the_viewer_streams_on_a_redis_channel_layer(
    browser: Any,
    daphne_server: Daphne,
    session_cookie: dict[str, str],
    emulator: Any,
    redis_url: str,
) -> None:
    # Restart the example project on the same port with channels_redis as its layer.
    daphne_server.stop()
    daphne_server.env = {**daphne_server.env, "REDIS_URL": redis_url}
    daphne_server.start()
    prompt = "workers sharing a Redis channel layer"
    run_id, _ = emulator.trigger(
        "demo-ai-writer", {"prompt": prompt, "tokens_per_second": 80, "await_approval": False}
    )

    context = await browser.new_context()
    await context.add_cookies([{**session_cookie, "url": daphne_server.url}])
    await context.add_init_script(RECORDER)
    page = await context.new_page()
    try:
        await page.goto(f"{daphne_server.url}/runs/{run_id}/?timeout=1&render=text")
        viewer = page.locator("[data-trigger-stream]")
        await expect(viewer).to_have_attribute("data-state", "complete", timeout=20_000)
        text = await page.locator("[data-trigger-stream] [data-trigger-output]").text_content()
        assert text == "".join(demo_answer_tokens(prompt))
    finally:
        await context.close()

    # The consumer really ran on channels_redis: it registered its channel in this Redis.
    info = await redis_info(redis_url)
    commands = int(
        next(line for line in info.splitlines() if line.startswith("total_commands")).split(":")[1]
    )
    assert commands > 1, "no command reached Redis: the project did not use the Redis layer"
