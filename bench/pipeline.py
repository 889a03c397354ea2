"""``make bench``, part two: the whole live pipeline, emulator → daphne → WebSocket viewers.

Real processes on loopback: the emulator (``bench-writer`` parts ``{"n", "t"}`` at a fixed rate,
see bench/emulator_tasks.py), daphne serving the example project (bench/settings.py), and viewer
clients speaking the page's protocol (bench/viewers.py, bench/protocol.py), in this process or in
client processes. Every figure has a baseline measured in the same run and the issue-9 target
beside it. Scenarios:

1. one viewer at 50 parts/s: added latency per part vs reading the emulator's SSE directly,
   paired by part (p50, p99);
2. one fast stream (50,000 parts written, then read): parts/s through daphne vs the direct read,
   daphne CPU-s per 10k parts;
3. 200 viewers x 5 parts/s, each its own run: latency from the write p50/p99/max, daphne CPU per
   delivered part;
4. 100 and 1,000 viewers of one run at 20 parts/s: upstream connections (the emulator's request
   log), latency, deliveries/s, CPU per delivered part; with ``FANOUT`` on two daphne workers,
   upstream connections for the cluster (skipped while the setting does not exist);
5. RSS per idle subscribed socket at 1,000 sockets;
6. every part delivered exactly once and in order, in every scenario (lost/dup/reordered).

``python -m bench.pipeline --scenario 3 --quick`` runs a subset, shorter. Results go to
``bench/results/pipeline-latest.json``. CPU and RSS are read from ``/proc/<daphne pid>``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from bench import procstat
from bench.protocol import Page, Viewer
from bench.stack import EMULATOR_TASKS, REPO_ROOT, Daphne, daphne_env, redis_server
from bench.viewers import PageClient

RESULTS = REPO_ROOT / "bench" / "results" / "pipeline-latest.json"
SECRET_KEY = "tr_dev_bench_" + "0123456789abcdef" * 3
DJANGO_SECRET_KEY = "bench-django-secret-key-" + "0123456789abcdef" * 3
#: Settings of every bench daphne: enough streams per user and pooled connections for 1,000.
BASE_TRIGGER_DJANGO: dict[str, Any] = {"MAX_STREAMS_PER_USER": 2000}


# -- statistics ---------------------------------------------------------------------------------


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def latency_summary(seconds: list[float]) -> dict[str, float]:
    return {
        "p50_ms": quantile(seconds, 0.5) * 1000,
        "p99_ms": quantile(seconds, 0.99) * 1000,
        "max_ms": (max(seconds) if seconds else float("nan")) * 1000,
        "count": len(seconds),
    }


@dataclass
class Correctness:
    viewers: int = 0
    expected: int = 0
    delivered: int = 0
    #: Parts missing before the last part a viewer applied: never coming (cursor order).
    lost: int = 0
    #: Parts after the last one applied when the bench stopped waiting: late, not lost.
    undelivered: int = 0
    duplicated: int = 0
    reordered: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, numbers: list[int], expected: int, error: Any = None) -> None:
        """One viewer's applied part numbers, which should be exactly ``0 … expected-1``."""
        self.viewers += 1
        self.expected += expected
        unique = set(numbers) & set(range(expected))
        last = max(unique, default=-1)
        self.delivered += len(unique)
        self.lost += (last + 1) - len(unique)
        self.undelivered += expected - (last + 1)
        self.duplicated += len(numbers) - len(set(numbers))
        self.reordered += sum(1 for a, b in itertools.pairwise(numbers) if b < a)
        if error:
            self.errors.append(str(error))

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.reordered == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "viewers": self.viewers,
            "expected": self.expected,
            "delivered": self.delivered,
            "lost": self.lost,
            "undelivered_at_deadline": self.undelivered,
            "duplicated": self.duplicated,
            "reordered": self.reordered,
            "errors": self.errors[:5],
        }


@dataclass
class Row:
    scenario: str
    metric: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_label: str = ""
    target: str = ""
    met: bool | None = None
    note: str = ""
    #: The baseline's unit when it differs from the figure's.
    baseline_unit: str = ""


class Report:
    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.correctness: dict[str, Correctness] = {}
        self.extra: dict[str, Any] = {}

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print_row(row)


def fmt(value: float | None, unit: str) -> str:
    if value is None or value != value:
        return "—"
    if unit in ("parts/s", "KB", "conn", "deliveries/s", "MB"):
        return f"{value:,.0f} {unit}"
    if abs(value) >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:.3g} {unit}"


HEADER = f"{'sc':4} {'metric':44} {'through daphne':>18} {'baseline':>30} {'target':>22}  met"


def print_row(row: Row) -> None:
    baseline = fmt(row.baseline, row.baseline_unit or row.unit) + (
        f" ({row.baseline_label})" if row.baseline_label else ""
    )
    met = "" if row.met is None else ("yes" if row.met else "NO")
    print(
        f"{row.scenario:4} {row.metric:44} {fmt(row.value, row.unit):>18} "
        f"{baseline if row.baseline is not None else '':>30} {row.target:>22}  {met}"
        + (f"  {row.note}" if row.note else ""),
        flush=True,
    )


async def poll_until(predicate: Callable[[], bool], limit: float, interval: float = 0.02) -> bool:
    """Wait until ``predicate()`` holds (True) or ``limit`` seconds pass (False)."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)
    return True


# -- the stack ----------------------------------------------------------------------------------


def setup_django(db_path: Path) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    os.environ["DJANGO_DB_NAME"] = str(db_path)
    os.environ.setdefault("DJANGO_SECRET_KEY", DJANGO_SECRET_KEY)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


class Stack:
    """The emulator for the whole run; a fresh daphne (or two) per scenario."""

    def __init__(self, workdir: Path) -> None:
        from trigger_django.emulator.testing import EmulatorProcess

        self.workdir = workdir
        self.db_path = workdir / "bench.sqlite3"
        self.emulator = EmulatorProcess(
            secret_key=SECRET_KEY, stream_version="v2", extra_args=EMULATOR_TASKS
        )
        self._daphnes = 0

    def __enter__(self) -> Stack:
        self.emulator.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.emulator.stop()

    @contextlib.contextmanager
    def daphne(
        self, trigger_django: dict[str, Any] | None = None, redis_url: str = ""
    ) -> Iterator[Daphne]:
        self._daphnes += 1
        env = daphne_env(
            db_name=str(self.db_path),
            api_url=self.emulator.url,
            secret_key=SECRET_KEY,
            trigger_django=json.dumps({**BASE_TRIGGER_DJANGO, **(trigger_django or {})}),
            redis_url=redis_url,
        )
        server = Daphne(env, self.workdir / f"daphne-{self._daphnes}.log")
        with server:
            yield server

    def trigger_writers(
        self, count: int, parts: int, rate: float, *, go: bool = True, spread: bool = True
    ) -> list[str]:
        runs = []
        for _ in range(count):
            payload: dict[str, Any] = {"count": parts, "rate": rate}
            if go:
                payload["go"] = "go"
            if spread and rate > 0:
                payload["phase"] = random.random() / rate
            run_id, _ = self.emulator.trigger("bench-writer", payload)
            runs.append(run_id)
        return runs

    def trigger_idle(self, count: int) -> list[str]:
        # A task id with no simulated task: the run stays EXECUTING and its stream stays empty.
        return [self.emulator.trigger("bench-idle", {})[0] for _ in range(count)]

    def go(self, run_ids: list[str]) -> None:
        def send(run_id: str) -> None:
            response = self.emulator.client.post(
                f"/realtime/v1/streams/{run_id}/input/go", json={"data": True}
            )
            response.raise_for_status()

        # A few at a time, so that 200 writers start within a fraction of a second.
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(send, run_ids))

    def wait_finished(self, run_ids: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for run_id in run_ids:

            def finished(r: str = run_id) -> bool:
                return bool(self.emulator.run(r)["status"] != "EXECUTING")

            self.emulator.wait_for(
                finished,
                max(1.0, deadline - time.monotonic()),
                interval=0.1,
            )

    def open_daphne_reads(self, run_ids: set[str]) -> tuple[int, int]:
        """``(open reads, runs with one)`` among daphne's stream reads of ``run_ids``."""
        opened: dict[str, int] = {}
        for r in self.emulator.requests():
            parts = r["path"].split("/")
            if (
                r.get("open")
                and r.get("auth") != "secret"
                and len(parts) == 6
                and parts[4] in run_ids
            ):
                opened[parts[4]] = opened.get(parts[4], 0) + 1
        return sum(opened.values()), len(opened)

    async def upstream_settled(self, run_ids: list[str], limit: float = 120) -> int:
        """Wait until daphne reads every run upstream and no more reads are opening.

        "subscribed" is sent once the upstream read has *started*: the request may still be
        connecting, and parts written before it connects would arrive as catch-up, counted as
        latency. Whatever the design (a read per viewer, per stream or per cluster), wait for
        every run to be read and the number of open reads to stay put for half a second.
        """
        wanted = set(run_ids)
        deadline = time.monotonic() + limit
        previous = -1
        while time.monotonic() < deadline:
            count, runs = await asyncio.to_thread(self.open_daphne_reads, wanted)
            if runs == len(wanted) and count == previous:
                return count
            previous = count if runs == len(wanted) else -1
            await asyncio.sleep(0.5)
        raise TimeoutError(f"daphne was not reading all {len(wanted)} runs within {limit} s")

    def stream_reads(self, run_id: str) -> int:
        from bench.stack import stream_reads

        return stream_reads(self.emulator.requests(), run_id)

    def open_reads(self) -> int:
        from bench.stack import open_stream_reads

        return open_stream_reads(self.emulator.requests())


def sessions(count: int) -> list[tuple[Any, str]]:
    from bench.stack import create_sessions

    return create_sessions(count)


def page_for(daphne: Daphne, session_key: str, viewers: list[Viewer]) -> PageClient:
    from bench.stack import cookie_header

    page = Page()
    for viewer in viewers:
        page.add(viewer)
    return PageClient(daphne.ws_url, daphne.url, cookie_header(session_key), page)


def new_viewer(user: Any, run_id: str, sub: str = "s1", timeout: int = 30) -> Viewer:
    from bench.stack import ticket

    return Viewer(sub=sub, ticket=ticket(user, run_id), run_id=run_id, timeout=timeout)


async def direct_read(
    url: str, run_id: str, expected: int, received: dict[int, float], ready: asyncio.Event
) -> float:
    """Read the emulator's SSE like bench/run.py's bare loop (httpx-sse, the two JSON decodes
    per v2 record, nothing else); record ``n → receive time``; returns the wall seconds."""
    loads = json.loads
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=None)) as client:
        start = time.perf_counter()
        async with aconnect_sse(
            client,
            "GET",
            f"{url}/realtime/v1/streams/{run_id}/default",
            headers={"Authorization": f"Bearer {SECRET_KEY}", "Timeout-Seconds": "30"},
        ) as source:
            ready.set()
            async for event in source.aiter_sse():
                if event.event != "batch":
                    continue
                now = time.time()
                for record in loads(event.data)["records"]:
                    received.setdefault(loads(record["body"])["data"]["n"], now)
                if len(received) >= expected:
                    break
        return time.perf_counter() - start


def numbers_of(viewer: Viewer) -> list[int]:
    return [p.chunk["n"] for p in viewer.applied if isinstance(p.chunk, dict)]


# -- client processes ---------------------------------------------------------------------------


class ClientProcesses:
    """Viewer pages spread over ``count`` ``python -m bench.viewers`` processes."""

    def __init__(
        self, workdir: Path, daphnes: list[Daphne], pages: list[dict[str, Any]], count: int
    ):
        self.workdir = workdir
        self.processes: list[asyncio.subprocess.Process] = []
        self.results: list[dict[str, Any]] = []
        #: CPU seconds each client process used in all (from ``load()``).
        self.cpu_s: list[float | None] = []
        #: HTTP statuses of handshakes daphne refused (the pages retried them).
        self.refused: list[int] = []
        self.specs: list[dict[str, Any]] = []
        for k in range(count):
            chosen = pages[k::count]
            # Pages alternate between the daphnes (several workers behind one address).
            server = daphnes[k % len(daphnes)]
            self.specs.append({"ws_url": server.ws_url, "origin": server.url, "pages": chosen})

    async def start(self, limit: float) -> None:
        for k, spec in enumerate(self.specs):
            spec_path = self.workdir / f"client-{k}.json"
            spec_path.write_text(json.dumps(spec))
            env = {key: value for key, value in os.environ.items() if key != "PYTHONDEVMODE"}
            stderr = open(self.workdir / f"client-{k}.err", "wb")  # noqa: SIM115, ASYNC230
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.viewers",
                str(spec_path),
                str(self.workdir / f"client-{k}.result.json"),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                cwd=REPO_ROOT,
                env=env,
            )
            stderr.close()
            self.processes.append(process)
        await asyncio.wait_for(self._expect_all("subscribed"), limit)

    async def _expect_all(self, word: str) -> None:
        for k, process in enumerate(self.processes):
            assert process.stdout is not None
            line = (await process.stdout.readline()).decode().strip()
            if line != word:
                err = (self.workdir / f"client-{k}.err").read_text(errors="replace")
                raise RuntimeError(f"client {k} said {line!r}, expected {word!r}:\n{err[-3000:]}")

    async def finish(self, limit: float) -> bool:
        """Wait for every client to have its parts; after ``limit`` s stop them. True if done."""
        finished = True
        try:
            await asyncio.wait_for(self._expect_all("done"), limit)
        except TimeoutError:
            finished = False
            await self.stop()
        return finished

    async def stop(self) -> None:
        for process in self.processes:
            if process.stdin is not None and process.returncode is None:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    process.stdin.write(b"stop\n")
                    await process.stdin.drain()
        for process in self.processes:
            assert process.stdout is not None
            await process.stdout.read()
            await process.wait()

    async def close(self) -> None:
        for process in self.processes:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()

    def load(self) -> list[dict[str, Any]]:
        results = []
        self.cpu_s = []
        for k in range(len(self.processes)):
            path = self.workdir / f"client-{k}.result.json"
            result = json.loads(path.read_text())
            results.extend(result["viewers"])
            self.cpu_s.append(result.get("cpu_s"))
            self.refused.extend(result.get("refused_handshakes", []))
        return results


def page_specs(
    users: list[tuple[Any, str]], run_ids: list[str], expected: int, timeout: int = 30
) -> list[dict[str, Any]]:
    from bench.stack import cookie_header, ticket

    pages = []
    for k, (user, session_key) in enumerate(users):
        run_id = run_ids[k % len(run_ids)]
        pages.append(
            {
                "cookie": cookie_header(session_key),
                "viewers": [
                    {
                        "sub": "s1",
                        "ticket": ticket(user, run_id),
                        "run_id": run_id,
                        "timeout": timeout,
                        "expected": expected,
                    }
                ],
            }
        )
    return pages


def collect(results: list[dict[str, Any]], expected: int, correctness: Correctness) -> list[float]:
    latencies: list[float] = []
    for viewer in results:
        numbers = [p[0] for p in viewer["parts"]]
        correctness.add(numbers, expected, viewer.get("error"))
        latencies.extend(received - written for _n, written, received in viewer["parts"])
    return latencies


# -- scenarios ----------------------------------------------------------------------------------


async def scenario_1(stack: Stack, report: Report, quick: bool) -> None:
    """One viewer at 50 parts/s: latency added by the pipeline, paired by part."""
    parts = 250 if quick else 1500
    correctness = report.correctness.setdefault("1", Correctness())
    ((user, session_key),) = await asyncio.to_thread(sessions, 1)
    (run_id,) = await asyncio.to_thread(stack.trigger_writers, 1, parts, 50.0, spread=False)
    with stack.daphne() as daphne:
        client = page_for(daphne, session_key, [new_viewer(user, run_id)])
        client.expected = {"s1": parts}
        client.frame_s = 0.001  # apply at once: this scenario measures arrival, not drawing
        viewing = asyncio.create_task(client.run())
        direct: dict[int, float] = {}
        ready = asyncio.Event()
        reading = asyncio.create_task(direct_read(stack.emulator.url, run_id, parts, direct, ready))
        await asyncio.wait_for(ready.wait(), 30)
        if not await poll_until(lambda: client.all_live() or viewing.done(), 30):
            raise RuntimeError(f"the viewer did not subscribe:\n{daphne.log()[-2000:]}")
        await stack.upstream_settled([run_id])
        await asyncio.to_thread(stack.go, [run_id])
        await asyncio.wait_for(asyncio.gather(viewing, reading), parts / 50 + 60)
    viewer = client.page.viewers["s1"]
    correctness.add(numbers_of(viewer), parts, viewer.error)
    added = [p.received - direct[p.chunk["n"]] for p in viewer.applied if p.chunk["n"] in direct]
    direct_latency = [
        direct[p.chunk["n"]] - p.chunk["t"] for p in viewer.applied if p.chunk["n"] in direct
    ]
    through = latency_summary([p.received - p.chunk["t"] for p in viewer.applied])
    base = latency_summary(direct_latency)
    add = latency_summary(added)
    report.extra["1"] = {"added": add, "direct": base, "through_daphne": through}
    report.add(
        Row(
            "1",
            "added latency per part, p50",
            add["p50_ms"],
            "ms",
            base["p50_ms"],
            "direct read from write",
            "≤ +0.3 ms",
            add["p50_ms"] <= 0.3,
        )
    )
    report.add(
        Row(
            "1",
            "added latency per part, p99",
            add["p99_ms"],
            "ms",
            base["p99_ms"],
            "direct read from write",
            "≤ +1 ms",
            add["p99_ms"] <= 1.0,
        )
    )


async def scenario_2(stack: Stack, report: Report, quick: bool) -> None:
    """One fast stream, written first, then read: throughput and daphne CPU per 10k parts."""
    parts = 10_000 if quick else 50_000
    repeats = 1 if quick else 3
    correctness = report.correctness.setdefault("2", Correctness())
    (run_id,) = await asyncio.to_thread(stack.trigger_writers, 1, parts, 0.0, go=False)
    await asyncio.to_thread(stack.wait_finished, [run_id], 120)
    users = await asyncio.to_thread(sessions, repeats)
    direct_rates, daphne_rates, cpu_per_10k = [], [], []
    with stack.daphne() as daphne:
        # Warm up both paths (imports, the pool, the first token) on a short read.
        warm = page_for(daphne, users[0][1], [new_viewer(users[0][0], run_id, timeout=5)])
        warm.expected = {"s1": 100}
        await asyncio.wait_for(warm.run(), 60)
        # The emulator frames each record once and caches it: the first full read pays that.
        await direct_read(stack.emulator.url, run_id, parts, {}, asyncio.Event())
        for user, session_key in users:
            received: dict[int, float] = {}
            wall = await direct_read(stack.emulator.url, run_id, parts, received, asyncio.Event())
            direct_rates.append(parts / wall)
            client = page_for(daphne, session_key, [new_viewer(user, run_id, timeout=5)])
            client.expected = {"s1": parts}
            cpu0, wall0 = procstat.cpu_seconds(daphne.pid), time.perf_counter()
            await asyncio.wait_for(client.run(), 300)
            wall = time.perf_counter() - wall0
            cpu = procstat.cpu_seconds(daphne.pid) - cpu0
            viewer = client.page.viewers["s1"]
            correctness.add(numbers_of(viewer), parts, viewer.error)
            daphne_rates.append(len(viewer.applied) / wall)
            cpu_per_10k.append(cpu / max(1, len(viewer.applied)) * 10_000)
    direct, through = statistics.median(direct_rates), statistics.median(daphne_rates)
    report.extra["2"] = {"direct": direct_rates, "daphne": daphne_rates, "cpu_per_10k": cpu_per_10k}
    report.add(
        Row(
            "2",
            f"fast stream ({parts:,} parts) read rate",
            through,
            "parts/s",
            direct,
            "direct read",
            "≥ 85 % of direct",
            through >= 0.85 * direct,
            f"{through / direct:.0%} of direct",
        )
    )
    report.add(Row("2", "daphne CPU per 10k parts", statistics.median(cpu_per_10k), "s"))


async def many_viewers(
    stack: Stack,
    report: Report,
    name: str,
    *,
    viewers: int,
    runs: int,
    rate: float,
    seconds: float,
    clients: int,
    daphne_settings: dict[str, Any] | None = None,
    workers: int = 1,
    redis_url: str = "",
) -> dict[str, Any]:
    """``viewers`` pages (one user each) over ``runs`` runs written at ``rate`` parts/s."""
    parts = int(rate * seconds)
    correctness = report.correctness.setdefault(name, Correctness())
    users = await asyncio.to_thread(sessions, viewers)
    run_ids = await asyncio.to_thread(stack.trigger_writers, runs, parts, rate)
    await asyncio.to_thread(stack.emulator.clear_requests)
    with contextlib.ExitStack() as servers:
        daphnes = [
            servers.enter_context(stack.daphne(daphne_settings, redis_url)) for _ in range(workers)
        ]
        pool = ClientProcesses(stack.workdir, daphnes, page_specs(users, run_ids, parts), clients)
        try:
            await pool.start(limit=120 + viewers * 0.05)
            # Baseline: bare SSE readers of a few of the runs, in this process, under the load.
            sample = run_ids[: min(10, len(run_ids))]
            direct: list[dict[int, float]] = [{} for _ in sample]
            ready = [asyncio.Event() for _ in sample]
            readers = [
                asyncio.create_task(direct_read(stack.emulator.url, r, parts, d, e))
                for r, d, e in zip(sample, direct, ready, strict=True)
            ]
            # Reading before the first write, like the viewers (else catch-up counts as latency).
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in ready)), 30)
            await stack.upstream_settled(run_ids)
            cpu0 = sum(procstat.cpu_seconds(d.pid) for d in daphnes)
            wall0, go_time = time.perf_counter(), time.time()
            await asyncio.to_thread(stack.go, run_ids)
            finished = await pool.finish(limit=seconds + 240)
            wall = time.perf_counter() - wall0
            cpu = sum(procstat.cpu_seconds(d.pid) for d in daphnes) - cpu0
            await asyncio.wait_for(asyncio.gather(*readers), 60)
            upstream = sum(stack.stream_reads(r) for r in run_ids)
            rss = [procstat.rss_bytes(d.pid) for d in daphnes]
        finally:
            await pool.close()
    results = pool.load()
    latencies = collect(results, parts, correctness)
    delivered = sum(len(v["parts"]) for v in results)
    # From the first write to the last part received (the go signals take a while to send,
    # and the clients a while to exit).
    last = max((received for v in results for _n, _t, received in v["parts"]), default=go_time)
    first = min((written for v in results for _n, written, _r in v["parts"]), default=go_time)
    span = max(1e-3, last - first)
    # The writers' own times, for the baseline: written → read by the bare loop.
    written = {(v["run_id"], n): t for v in results for n, t, _ in v["parts"]}
    base = [
        t - written[(run_id, n)]
        for run_id, d in zip(sample, direct, strict=True)
        for n, t in d.items()
        if (run_id, n) in written
    ]
    summary = {
        "latency": latency_summary(latencies),
        "direct_latency": latency_summary(base),
        "delivered": delivered,
        "wall_s": wall,
        "span_s": span,
        "daphne_cpu_s": cpu,
        "cpu_ms_per_part": cpu / max(1, delivered) * 1000,
        "deliveries_per_s": delivered / span,
        "upstream_connections": upstream,
        "finished_in_time": finished,
        "daphne_rss_mb": [r / 2**20 for r in rss],
        "client_cpu_s": pool.cpu_s,
        "runs": runs,
        "viewers": viewers,
        "parts_per_run": parts,
    }
    report.extra[name] = summary
    return summary


def delivery_note(summary: dict[str, Any]) -> str:
    """Parts and time, and the busiest client process's CPU over the scenario (its whole life,
    connecting included), so that a client-bound figure shows as such."""
    note = f"{summary['delivered']:,} parts in {summary['span_s']:.1f} s"
    if summary.get("wall_s"):
        note += f"; daphne at {summary['daphne_cpu_s'] / summary['wall_s']:.0%} of a core"
    used = [c for c in summary.get("client_cpu_s") or [] if c is not None]
    if used:
        note += f"; busiest client used {max(used):.1f} CPU-s"
    return note


def latency_rows(
    report: Report, name: str, summary: dict[str, Any], targets: dict[str, Any]
) -> None:
    lat, base = summary["latency"], summary["direct_latency"]
    for key, label in (("p50_ms", "p50"), ("p99_ms", "p99"), ("max_ms", "max")):
        target = targets.get(key)
        report.add(
            Row(
                name,
                f"latency from write, {label}",
                lat[key],
                "ms",
                base[key],
                "direct read",
                f"≤ {target:g} ms" if target else "",
                None if target is None else lat[key] <= target,
            )
        )


async def scenario_3(stack: Stack, report: Report, quick: bool, clients: int) -> None:
    viewers = 200
    summary = await many_viewers(
        stack,
        report,
        "3",
        viewers=viewers,
        runs=viewers,
        rate=5.0,
        seconds=10 if quick else 30,
        clients=clients,
    )
    latency_rows(report, "3", summary, {"max_ms": 50})
    report.add(
        Row(
            "3",
            "daphne CPU per delivered part",
            summary["cpu_ms_per_part"],
            "ms",
            target="≤ 0.1 ms",
            met=summary["cpu_ms_per_part"] <= 0.1,
            note=delivery_note(summary),
        )
    )


async def scenario_4(stack: Stack, report: Report, quick: bool, clients: int) -> None:
    for viewers in (100, 1000):
        name = f"4/{viewers}"
        summary = await many_viewers(
            stack,
            report,
            name,
            viewers=viewers,
            runs=1,
            rate=20.0,
            seconds=5 if quick else 20,
            clients=clients,
        )
        report.add(
            Row(
                name,
                f"upstream connections, {viewers} viewers of 1 run",
                summary["upstream_connections"],
                "conn",
                1,
                "one per process",
                "1 per process",
                summary["upstream_connections"] <= 1,
            )
        )
        latency_rows(report, name, summary, {"p99_ms": 50} if viewers == 100 else {})
        report.add(
            Row(
                name,
                "part deliveries per second",
                summary["deliveries_per_s"],
                "deliveries/s",
                viewers * 20.0,
                "offered",
            )
        )
        # The load offered at 1,000 viewers is exactly 20,000/s, so what one process can do is
        # read from its CPU: deliveries per CPU-second of daphne (one process uses one core).
        capacity = 1000 / summary["cpu_ms_per_part"] if summary["cpu_ms_per_part"] else 0.0
        report.add(
            Row(
                name,
                "deliveries per daphne CPU-second",
                capacity,
                "deliveries/s",
                target="≥ 20,000/s per process",
                met=capacity >= 20_000 if viewers == 1000 else None,
            )
        )
        report.add(
            Row(
                name,
                "daphne CPU per delivered part",
                summary["cpu_ms_per_part"],
                "ms",
                note=delivery_note(summary)
                + ("" if summary["finished_in_time"] else ", NOT all delivered in time"),
            )
        )
    await scenario_4_fanout(stack, report, quick, clients)


def fanout_known() -> bool:
    from trigger_django.conf import DEFAULTS

    return "FANOUT" in DEFAULTS


async def scenario_4_fanout(stack: Stack, report: Report, quick: bool, clients: int) -> None:
    if not fanout_known():
        report.add(
            Row(
                "4/F",
                "FANOUT, 2 daphne workers: upstream conns",
                None,
                "conn",
                target="1 per cluster",
                note="skipped: TRIGGER_DJANGO['FANOUT'] is not a setting of this checkout "
                "(issue 9 adds it)",
            )
        )
        return
    # "{redis_url}" is replaced by the bench's Redis (docs/settings.md, FANOUT).
    template = os.environ.get("BENCH_FANOUT_SETTING", '{"FANOUT": {"REDIS_URL": "{redis_url}"}}')
    with redis_server(stack.workdir) as url:
        setting = json.loads(template.replace("{redis_url}", url))
        summary = await many_viewers(
            stack,
            report,
            "4/F",
            viewers=100,
            runs=1,
            rate=20.0,
            seconds=5 if quick else 20,
            clients=max(2, clients),
            daphne_settings=setting,
            workers=2,
            redis_url=url,
        )
    report.add(
        Row(
            "4/F",
            "FANOUT, 2 daphne workers: upstream conns",
            summary["upstream_connections"],
            "conn",
            1,
            "one per cluster",
            "1 per cluster",
            summary["upstream_connections"] <= 1,
        )
    )
    latency_rows(report, "4/F", summary, {})


async def scenario_5(stack: Stack, report: Report, quick: bool, clients: int) -> None:
    """RSS per idle socket with one live subscription: each socket on its own run (every socket
    then also costs its run's upstream read and run subscription), and sockets sharing a few runs
    (what the socket and its subscription cost)."""
    sockets = 200 if quick else 1000
    for variant, runs in (("own runs", sockets), ("10 runs", 10)):
        await idle_sockets(stack, report, clients, sockets, runs, variant)


async def idle_sockets(
    stack: Stack, report: Report, clients: int, sockets: int, runs: int, variant: str
) -> None:
    users = await asyncio.to_thread(sessions, sockets + 20)
    run_ids = await asyncio.to_thread(stack.trigger_idle, runs + 20)
    # With its own run, a socket's stream has a read and a run subscription upstream, so the
    # pool must hold two connections per run (HTTP_MAX_CONNECTIONS, docs/settings.md).
    with stack.daphne({"HTTP_MAX_CONNECTIONS": 2 * (runs + 20) + 100}) as daphne:
        # Warm up: a few sockets subscribe and leave, so first-use costs are in the baseline.
        warm = ClientProcesses(
            stack.workdir, [daphne], page_specs(users[:20], run_ids[:20], 0, timeout=600), 1
        )
        for spec in warm.specs:
            spec["until_expected"] = False
        try:
            await warm.start(limit=60)
            await warm.stop()
        finally:
            await warm.close()
        await poll_until(lambda: stack.open_reads() == 0, 30, 0.2)
        rss0 = procstat.rss_bytes(daphne.pid)
        pool = ClientProcesses(
            stack.workdir, [daphne], page_specs(users[20:], run_ids[20:], 0, timeout=600), clients
        )
        for spec in pool.specs:
            spec["until_expected"] = False
        try:
            await pool.start(limit=120 + sockets * 0.05)
            # Every subscription has its upstream read open (with the hub, one per run).
            await poll_until(lambda: stack.open_reads() >= runs, 60, 0.2)
            await asyncio.sleep(1.0)
            rss1 = procstat.rss_bytes(daphne.pid)
            open_reads = stack.open_reads()
            await pool.stop()
        finally:
            await pool.close()
        pool.load()
        await poll_until(lambda: stack.open_reads() == 0, 30, 0.2)
        rss2 = procstat.rss_bytes(daphne.pid)
        left = stack.open_reads()
    per_socket_kb = (rss1 - rss0) / sockets / 1024
    report.extra[f"5 {variant}"] = {
        "sockets": sockets,
        "runs": runs,
        "rss_before_mb": rss0 / 2**20,
        "rss_subscribed_mb": rss1 / 2**20,
        "rss_after_close_mb": rss2 / 2**20,
        "open_reads_while_subscribed": open_reads,
        "open_reads_after": left,
        "refused_handshakes": len(pool.refused),
    }
    refused = f"; {len(pool.refused)} handshakes refused and retried" if pool.refused else ""
    report.add(
        Row(
            "5",
            f"RSS per idle subscribed socket ({sockets:,}, {variant})",
            per_socket_kb,
            "KB",
            rss0 / 2**20,
            "daphne RSS before",
            "≤ 48 KB",
            per_socket_kb <= 48,
            f"{open_reads} upstream reads open; {left} left after close{refused}",
            baseline_unit="MB",
        )
    )


SCENARIOS = ("1", "2", "3", "4", "5")


def print_correctness(report: Report) -> None:
    print(
        f"\n6. Exactly once, in order (per scenario; 'late' = not yet delivered when the bench "
        f"stopped waiting)\n{'sc':6} {'viewers':>8} {'expected':>10} {'delivered':>10} "
        f"{'lost':>6} {'dup':>6} {'reord':>6} {'late':>8}  ok"
    )
    for name, c in report.correctness.items():
        print(
            f"{name:6} {c.viewers:>8,} {c.expected:>10,} {c.delivered:>10,} {c.lost:>6,} "
            f"{c.duplicated:>6,} {c.reordered:>6,} {c.undelivered:>8,}  {'yes' if c.ok else 'NO'}"
            + (f"  errors: {c.errors[0]}" if c.errors else "")
        )


async def run(args: argparse.Namespace, workdir: Path) -> Report:
    report = Report()
    try:
        with Stack(workdir) as stack:
            print(HEADER, flush=True)
            print("-" * len(HEADER))
            for name in args.scenario:
                # The machine is shared: say how busy it was, beside the figures.
                load = os.getloadavg()[0]
                report.extra.setdefault("load_average_1min", {})[name] = load
                print(f"-- scenario {name} (load average {load:.1f} on {os.cpu_count()} CPUs)")
                if name == "1":
                    await scenario_1(stack, report, args.quick)
                elif name == "2":
                    await scenario_2(stack, report, args.quick)
                elif name == "3":
                    await scenario_3(stack, report, args.quick, args.clients)
                elif name == "4":
                    await scenario_4(stack, report, args.quick, args.clients)
                elif name == "5":
                    await scenario_5(stack, report, args.quick, args.clients)
        print_correctness(report)
    finally:
        if args.keep:
            print(f"(logs kept in {workdir})")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--quick", action="store_true", help="shorter streams, fewer sockets")
    parser.add_argument("--clients", type=int, default=2, help="viewer client processes")
    parser.add_argument("--keep", action="store_true", help="keep the daphne and client logs")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="trigger-bench-"))
    setup_django(workdir / "bench.sqlite3")
    report = asyncio.run(run(args, workdir))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "python": platform.python_version(),
                "quick": args.quick,
                "clients": args.clients,
                "rows": [row.__dict__ for row in report.rows],
                "correctness": {k: c.to_json() for k, c in report.correctness.items()},
                "details": report.extra,
            },
            indent=2,
            default=str,
        )
        + "\n"
    )
    print(f"\nWritten to {args.output}")
    failed = [name for name, c in report.correctness.items() if not c.ok]
    if failed:
        print(f"Delivery was NOT exactly-once in order in: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
