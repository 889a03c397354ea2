"""Python viewer clients for the bench and the soak: real WebSockets, the page's protocol.

:class:`PageClient` is one browser page: a ``websockets`` connection carrying a session cookie and
the page's ``Origin``, the protocol state of :mod:`bench.protocol` (subscribe, apply in cursor order
with de-duplication, ack once per "animation frame", resubscribe from the cursor after a drop with
the page's jittered backoff), and the receive time of every part. :meth:`PageClient.drop` cuts the
TCP connection without a close handshake, as a network drop would.

Run as ``python -m bench.viewers SPEC.json RESULT.json`` it is a client process of the bench: it
opens every page of the spec, prints ``subscribed`` once every viewer is confirmed, runs until each
viewer has its expected parts (or ``stop`` arrives on stdin), writes the result and prints ``done``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Origin

from bench.protocol import Page, Viewer

#: The page's reconnect backoff (trigger-django.js): 100 ms doubling to 5 s, minus up to half.
BACKOFF_BASE_S = 0.1
BACKOFF_MAX_S = 5.0
#: One animation frame: the page applies and acknowledges parts at most this often.
FRAME_S = 1 / 60


class PageClient:
    """One page with its viewers, over one socket at a time."""

    def __init__(
        self,
        ws_url: str,
        origin: str,
        session_cookie: str,
        page: Page | None = None,
        *,
        frame_s: float = FRAME_S,
        expected: dict[str, int] | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.ws_url = ws_url
        self.origin = origin
        self.cookie = session_cookie
        self.page = page or Page()
        self.frame_s = frame_s
        #: Parts each viewer must apply before this page counts as finished (None: until done).
        self.expected = expected
        self.on_change = on_change
        self.socket: ClientConnection | None = None
        self.connects = 0
        self.drops = 0
        self.close_codes: list[int | None] = []
        #: HTTP statuses of refused handshakes (the page retries them as 1006 closes).
        self.refused_handshakes: list[int] = []
        #: Limits how many pages connect at once (None: no limit).
        self.connect_gate: asyncio.Semaphore | None = None
        self._closing: asyncio.Future[None] | None = None
        self._attempt = 0
        self._flush_wanted = asyncio.Event()
        self._stop = asyncio.Event()

    # -- state --------------------------------------------------------------------------------

    def finished(self) -> bool:
        for viewer in self.page.viewers.values():
            if viewer.done:
                continue
            if self.expected is None or len(viewer.applied) < self.expected.get(viewer.sub, 0):
                return False
        return True

    def all_live(self) -> bool:
        return all(v.state == "live" or v.done for v in self.page.viewers.values())

    def stop(self) -> None:
        """Close (1000) and stop reconnecting. Must be called from the client's event loop."""
        self._stop.set()
        self._flush_wanted.set()
        if self.socket is not None:
            # An idle socket may never receive again: close it rather than wait for a frame.
            self._closing = asyncio.ensure_future(self.socket.close(1000))

    def drop(self) -> bool:
        """Cut the TCP connection now (no close frame): a network drop. False if not connected."""
        socket = self.socket
        if socket is None:
            return False
        self.drops += 1
        socket.transport.abort()
        return True

    # -- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, and reconnect after drops, until finished or stopped; then close (1000)."""
        while not self._stop.is_set() and not self.finished():
            retry = await self._connect_once()
            if not retry or self._stop.is_set() or self.finished():
                break
            self._attempt += 1
            base = min(BACKOFF_BASE_S * 2 ** (self._attempt - 1), BACKOFF_MAX_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), base * (1 - 0.5 * random.random()))

    async def _connect_once(self) -> bool:
        gate = self.connect_gate or contextlib.nullcontext()
        try:
            async with gate:
                socket = await self._open()
        except InvalidStatus as exc:
            # A refused handshake (daphne answers 403 when the application has not accepted
            # within its handshake timeout) is a 1006 close to the page, which reconnects.
            self.refused_handshakes.append(exc.response.status_code)
            retry = self.page.on_close(1006)
            if self.on_change is not None:
                self.on_change()
            return retry
        except (OSError, InvalidHandshake, TimeoutError):
            return True  # the server is away: retry with backoff, like the page
        return await self._serve(socket)

    async def _open(self) -> ClientConnection:
        return await connect(
            self.ws_url,
            origin=Origin(self.origin),
            additional_headers={"Cookie": self.cookie},
            compression=None,
            max_size=None,
            ping_interval=None,
            open_timeout=60,
            close_timeout=5,
        )

    async def _serve(self, socket: ClientConnection) -> bool:
        self.socket = socket
        self.connects += 1
        flusher = asyncio.create_task(self._flush_loop(socket))
        try:
            for message in self.page.on_open():
                await socket.send(json.dumps(message))
            async for text in socket:
                self.page.receive(str(text), time.time())
                if self.page.dirty:
                    self._flush_wanted.set()
                if any(v.state == "live" for v in self.page.viewers.values()):
                    self._attempt = 0
                if self.on_change is not None:
                    self.on_change()
                if self._stop.is_set():
                    break
        except ConnectionClosed:
            pass
        finally:
            self._stop_flusher(flusher)
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
        if self.finished() or self._stop.is_set():
            await socket.close(1000)
            self.socket = None
            return False
        code = socket.close_code or 1006  # none received: an abnormal closure
        self.socket = None
        self.close_codes.append(code)
        retry = self.page.on_close(code)
        if self.on_change is not None:
            self.on_change()
        return retry

    def _stop_flusher(self, flusher: asyncio.Task[None]) -> None:
        flusher.cancel()

    async def _flush_loop(self, socket: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._flush_frames(socket)

    async def _flush_frames(self, socket: ClientConnection) -> None:
        while True:
            await self._flush_wanted.wait()
            # Like requestAnimationFrame: at the next frame boundary.
            await asyncio.sleep(self.frame_s - time.monotonic() % self.frame_s)
            self._flush_wanted.clear()
            for message in self.page.flush():
                await socket.send(json.dumps(message))
            if self.on_change is not None:
                self.on_change()
            if self.finished():
                self._stop.set()
                await socket.close(1000)
                return


# -- a client process of the bench --------------------------------------------------------------


async def stop_pages(clients: list[PageClient], tasks: list[asyncio.Task[Any]]) -> None:
    """Stop every page and wait for its task to end (cancelled if it has not)."""
    for client in clients:
        client.stop()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def viewer_result(viewer: Viewer) -> dict[str, Any]:
    """What the bench needs from a viewer: ``[n, written, received]`` per applied part."""
    parts = []
    for part in viewer.applied:
        chunk = part.chunk if isinstance(part.chunk, dict) else {}
        parts.append([chunk.get("n"), chunk.get("t"), part.received])
    return {
        "sub": viewer.sub,
        "run_id": viewer.run_id,
        "parts": parts,
        "subscribes": viewer.subscribes,
        "error": viewer.error,
        "completed": viewer.completed,
    }


def pages_from_spec(spec: dict[str, Any]) -> list[PageClient]:
    clients = []
    for entry in spec["pages"]:
        page = Page()
        expected = {}
        for item in entry["viewers"]:
            page.add(
                Viewer(
                    sub=item["sub"],
                    ticket=item["ticket"],
                    run_id=item["run_id"],
                    key=item.get("key", "default"),
                    timeout=item.get("timeout"),
                    start_index=item.get("start_index"),
                )
            )
            expected[item["sub"]] = int(item.get("expected", 0))
        clients.append(
            PageClient(
                spec["ws_url"],
                spec["origin"],
                entry["cookie"],
                page,
                expected=expected if spec.get("until_expected", True) else None,
            )
        )
    return clients


async def serve_spec(spec: dict[str, Any], result_path: str) -> None:
    clients = pages_from_spec(spec)
    subscribed = asyncio.Event()

    def changed() -> None:
        if not subscribed.is_set() and all(c.all_live() for c in clients):
            subscribed.set()

    for client in clients:
        client.on_change = changed
    # Open the sockets a few at a time: daphne's listen backlog is small.
    gate = asyncio.Semaphore(int(spec.get("connect_concurrency", 50)))
    for client in clients:
        client.connect_gate = gate
    tasks = [asyncio.create_task(client.run()) for client in clients]

    async def read_commands() -> None:
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line or line.strip() == "stop":
                for client in clients:
                    client.stop()
                return

    commands = asyncio.create_task(read_commands())
    waiter: asyncio.Future[Any] = asyncio.ensure_future(subscribed.wait())
    everything: asyncio.Future[Any] = asyncio.ensure_future(asyncio.gather(*tasks))
    await asyncio.wait([waiter, everything], return_when=asyncio.FIRST_COMPLETED)
    if not subscribed.is_set():
        # Every page ended before all were live: refused (a close code, an in-band error).
        errors = {str(v.error) for c in clients for v in c.page.viewers.values() if v.error}
        # A page whose handshake was refused (an HTTP status) ends with that exception.
        errors |= {
            f"{type(t.exception()).__name__}: {t.exception()}"
            for t in tasks
            if t.done() and not t.cancelled() and t.exception() is not None
        }
        codes = sorted({c for p in clients for c in p.close_codes if c not in (None, 1000)})
        print(f"not subscribed: {sorted(errors)[:3]} close codes {codes[:5]}", flush=True)
    else:
        print("subscribed", flush=True)
    await everything
    commands.cancel()
    result = {
        "viewers": [viewer_result(v) for c in clients for v in c.page.viewers.values()],
        "connects": sum(c.connects for c in clients),
        "close_codes": [code for c in clients for code in c.close_codes],
        "refused_handshakes": [status for c in clients for status in c.refused_handshakes],
        # So the bench can tell whether the clients, not daphne, were the limit.
        "cpu_s": time.process_time(),
    }
    Path(result_path).write_text(json.dumps(result))  # noqa: ASYNC240  (nothing else runs now)
    print("done", flush=True)


def main() -> None:
    spec_path, result_path = sys.argv[1], sys.argv[2]
    with open(spec_path) as source:
        spec = json.load(source)
    asyncio.run(serve_spec(spec, result_path))
    # The stdin reader thread may still be blocked in readline: do not wait for it.
    sys.stdout.flush()
    import os

    os._exit(0)


if __name__ == "__main__":
    main()
