"""Server CPU of ``render="markdown"`` with many viewers of one stream: real daphne, real
WebSockets, the emulator writing the answer.

One 100 KB answer (``bench.markdown_render.answer_of``) in 20-character parts, written by the
emulator at ``--rate`` parts/s (200, issue 12's rate), watched by 1 and then by 100 viewers (one
page socket each, the page's protocol from ``bench.viewers``, in this process), in markdown and,
as the same run's baseline, in text mode. Measured: daphne's CPU seconds (``/proc``) from the
first write until every viewer has every part, and this process's CPU (the clients): should the
viewers fall behind (the stream takes over 1.25x its length), viewers catch up through their
own reads and the figures are flagged as not comparable. The hub renders a stream once per
process, so markdown at 100 viewers should cost what one viewer costs plus the sends to the
other 99, and the sends are what text mode's 100 viewers cost over its one. Printed: each
figure, the 100/1 ratios, and markdown's 100 viewers against
``markdown(1) + (text(100) - text(1))`` (target ≈ 1.0).

Run ``python -m bench.markdown_fanout`` (``--viewers``, ``--rate``, ``--size``). The emulator
loads this module (``--tasks-module``) for its ``bench-markdown-writer`` task.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trigger_django.emulator.tasks import RunContext, register_task

WRITER = "bench-markdown-writer"
PART = 20


@register_task(WRITER)
async def markdown_writer(ctx: RunContext) -> Any:
    """Payload: ``text`` written in ``part``-character parts at ``rate`` parts/s, after the
    input ``go`` arrives (on an absolute schedule, no drift)."""
    payload = ctx.payload if isinstance(ctx.payload, dict) else {}
    text = str(payload.get("text", ""))
    part = int(payload.get("part", PART))
    rate = float(payload.get("rate", 0))
    await ctx.wait_for_input("go", timeout=3600)
    output = ctx.stream("default")
    loop = asyncio.get_running_loop()
    start = loop.time()
    for n, offset in enumerate(range(0, len(text), part)):
        if rate > 0:
            delay = start + n / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        await output.append(text[offset : offset + part])
    return {"parts": n + 1 if text else 0}


@dataclass
class _Scenario:
    mode: str  # "text" or "markdown"
    viewers: int
    cpu_s: float = 0.0
    seconds: float = 0.0
    parts: int = 0
    #: CPU of this process (the viewers' clients) meanwhile: near a core, they were the limit.
    clients_cpu_s: float = 0.0


@contextlib.contextmanager
def _stack(workdir: Path) -> Iterator[tuple[Any, Any]]:
    """The emulator (with this module's writer) and one daphne serving the example project."""
    from bench.pipeline import BASE_TRIGGER_DJANGO, SECRET_KEY
    from bench.stack import EMULATOR_TASKS, Daphne, daphne_env
    from trigger_django.emulator.testing import EmulatorProcess

    emulator = EmulatorProcess(
        secret_key=SECRET_KEY,
        stream_version="v2",
        extra_args=(*EMULATOR_TASKS, "--tasks-module", "bench.markdown_fanout"),
        cwd=Path(__file__).resolve().parents[1],
    )
    emulator.start()
    try:
        env = daphne_env(
            db_name=str(workdir / "bench.sqlite3"),
            api_url=emulator.url,
            secret_key=SECRET_KEY,
            trigger_django=json.dumps(BASE_TRIGGER_DJANGO),
        )
        with Daphne(env, workdir / "daphne.log") as daphne:
            yield emulator, daphne
    finally:
        emulator.stop()


def _viewer(user: Any, run_id: str, mode: str) -> Any:
    from bench.protocol import Viewer
    from bench.stack import ticket

    class MarkdownViewer(Viewer):
        def subscribe_message(self) -> dict[str, Any]:
            message = super().subscribe_message()
            if mode == "markdown":
                message["render"] = "markdown"
            return message

    return MarkdownViewer(sub="s1", ticket=ticket(user, run_id), run_id=run_id, timeout=60)


def _upstream_open(emulator: Any, run_id: str) -> bool:
    path = f"/realtime/v1/streams/{run_id}/default"
    return any(
        r.get("open") and r["method"] == "GET" and r["path"] == path and r.get("auth") != "secret"
        for r in emulator.requests()
    )


async def _scenario(
    emulator: Any, daphne: Any, users: list[tuple[Any, str]], scenario: _Scenario, text: str,
    rate: float,
) -> None:  # fmt: skip
    from bench import procstat
    from bench.protocol import Page
    from bench.stack import cookie_header
    from bench.viewers import PageClient, stop_pages

    payload = {"text": text, "part": PART, "rate": rate}
    run_id, _ = await asyncio.to_thread(emulator.trigger, WRITER, payload)
    expected = len(range(0, len(text), PART))
    clients = []
    for user, session_key in users[: scenario.viewers]:
        page = Page()
        page.add(_viewer(user, run_id, scenario.mode))
        clients.append(
            PageClient(
                daphne.ws_url, daphne.url, cookie_header(session_key), page,
                expected={"s1": expected},
            )
        )  # fmt: skip
    gate = asyncio.Semaphore(25)
    live = asyncio.Event()

    def changed() -> None:
        if all(c.all_live() for c in clients):
            live.set()

    for client in clients:
        client.connect_gate = gate
        client.on_change = changed
    tasks = [asyncio.create_task(client.run()) for client in clients]
    try:
        async with asyncio.timeout(120):
            await live.wait()
            # "subscribed" comes once the upstream read has started, not connected: wait
            # until the emulator serves it, so that the first write is read live.
            while True:
                if await asyncio.to_thread(_upstream_open, emulator, run_id):
                    break
                await asyncio.sleep(0.05)
        began_cpu = procstat.cpu_seconds(daphne.pid)
        began_clients = time.process_time()
        began = time.monotonic()
        response = await asyncio.to_thread(
            emulator.client.post, f"/realtime/v1/streams/{run_id}/input/go", json={"data": True}
        )
        response.raise_for_status()
        async with asyncio.timeout(max(120, 4 * expected / max(rate, 1))):
            await asyncio.gather(*tasks)
        scenario.cpu_s = procstat.cpu_seconds(daphne.pid) - began_cpu
        scenario.seconds = time.monotonic() - began
        scenario.clients_cpu_s = time.process_time() - began_clients
        scenario.parts = expected
        for client in clients:
            viewer = client.page.viewers["s1"]
            if len(viewer.applied) < expected:
                raise RuntimeError(
                    f"a {scenario.mode} viewer got {len(viewer.applied)} of {expected} parts"
                    f" ({viewer.error})"
                )
    finally:
        await stop_pages(clients, tasks)


async def _run(
    workdir: Path, users: list[tuple[Any, str]], viewers: int, rate: float, text: str
) -> list[_Scenario]:
    scenarios = [_Scenario(mode, count) for count in (1, viewers) for mode in ("text", "markdown")]
    with _stack(workdir) as (emulator, daphne):
        # Warm-up: imports, the first render, the first sockets.
        await _scenario(emulator, daphne, users, _Scenario("markdown", 2), text[:4000], 0)
        for scenario in scenarios:
            await _scenario(emulator, daphne, users, scenario, text, rate)
    return scenarios


def run(viewers: int, rate: float, size: int) -> list[_Scenario]:
    from bench.markdown_render import answer_of
    from bench.pipeline import setup_django
    from bench.stack import create_sessions

    workdir = Path(tempfile.mkdtemp(prefix="trigger-bench-md-"))
    try:
        setup_django(workdir / "bench.sqlite3")
        users = create_sessions(max(viewers, 2), "markdown")
        return asyncio.run(_run(workdir, users, viewers, rate, answer_of(size)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", type=int, default=100)
    parser.add_argument("--rate", type=float, default=200.0, help="parts per second")
    parser.add_argument("--size", type=int, default=100_000, help="answer size in characters")
    args = parser.parse_args()
    scenarios = run(args.viewers, args.rate, args.size)
    print(
        f"one {args.size // 1000} KB answer, {PART}-character parts at {args.rate:.0f} parts/s,"
        " daphne CPU from the first write to the last part at every viewer"
    )
    print(
        f"{'mode':>9} {'viewers':>8} {'stream':>8} {'daphne CPU':>11} {'per part':>10}"
        f" {'clients CPU':>12}"
    )
    cpu: dict[tuple[str, int], float] = {}
    nominal = scenarios[0].parts / args.rate
    for s in scenarios:
        cpu[(s.mode, s.viewers)] = s.cpu_s
        lagged = "  (viewers lagged: figure not comparable)" if s.seconds > 1.25 * nominal else ""
        print(
            f"{s.mode:>9} {s.viewers:>8} {s.seconds:>7.1f}s {s.cpu_s:>10.2f}s"
            f" {s.cpu_s / s.parts * 1e6:>8.0f}µs {s.clients_cpu_s:>11.2f}s{lagged}"
        )
    many = args.viewers
    sends = cpu[("text", many)] - cpu[("text", 1)]
    expected = cpu[("markdown", 1)] + sends
    markdown_ratio = cpu[("markdown", many)] / cpu[("markdown", 1)]
    text_ratio = cpu[("text", many)] / cpu[("text", 1)]
    print(
        f"{many} viewers / 1 viewer, same run: markdown {markdown_ratio:.2f}x,"
        f" text {text_ratio:.2f}x"
    )
    print(
        f"markdown at {many} viewers = {cpu[('markdown', many)] / expected:.2f}x (one markdown"
        f" viewer + the sends to {many - 1} more, i.e. text({many}) - text(1)); target ≈ 1.0"
    )
    print(
        f"markdown's own cost (markdown - text): {cpu[('markdown', 1)] - cpu[('text', 1)]:.2f}s"
        f" at 1 viewer, {cpu[('markdown', many)] - cpu[('text', many)]:.2f}s at {many}"
    )


if __name__ == "__main__":
    main()
