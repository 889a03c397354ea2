"""Serving the emulator with uvicorn (which streams request bodies; daphne buffers them)."""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Callable, Generator
from typing import TextIO

import uvicorn

from trigger_django.emulator.app import EmulatorApp
from trigger_django.emulator.sse import AbortConnection
from trigger_django.emulator.state import EmulatorConfig

LISTENING_MESSAGE = "Trigger.dev emulator listening on {url}"


class _HideDeliberateAborts(logging.Filter):
    """Injected drops and shutdown aborts are deliberate; uvicorn would log them as errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, AbortConnection)


class EmulatorServer(uvicorn.Server):
    """A uvicorn server that announces its URL once it accepts connections and, on shutdown,
    drops open SSE reads and ingest bodies first so that it does not wait for them."""

    def __init__(
        self, config: uvicorn.Config, app: EmulatorApp, on_started: Callable[[], None]
    ) -> None:
        super().__init__(config)
        self.emulator = app
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.emulator.state.closing.set()
        await super().shutdown(sockets=sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # Unlike uvicorn's own, do not re-raise the signal afterwards: SIGTERM is a clean stop.
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def url_for(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve(
    config: EmulatorConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    out: TextIO | None = None,
    app: EmulatorApp | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM; print the listening line on ``out`` once accepting."""
    app = app or EmulatorApp(config)
    stream = out or sys.stdout
    sock = bind_socket(host, port)
    url = url_for(host, sock.getsockname()[1])
    logging.getLogger("uvicorn.error").addFilter(_HideDeliberateAborts())
    uvicorn_config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
        timeout_keep_alive=30,
        http="h11",
        ws="none",
    )

    def announce() -> None:
        stream.write(LISTENING_MESSAGE.format(url=url) + "\n")
        stream.flush()

    server = EmulatorServer(uvicorn_config, app, announce)
    try:
        await server.serve(sockets=[sock])
    finally:
        sock.close()
