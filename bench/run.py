"""``make bench``: how fast, and at what CPU cost, the client reads a realtime stream.

Three readers consume the same emulator stream (small parts, v1 and v2 framing):

* ``read_stream`` — :meth:`trigger_django.client.TriggerClient.read_stream`;
* ``sdk`` — the official ``ApiClient.fetchStream`` (``@trigger.dev/core`` 4.8.3) in Node,
  measuring its own process CPU with ``process.cpuUsage()``;
* ``bare`` — a bare httpx-sse loop doing only the unavoidable work (SSE parsing and the JSON
  decoding of each batch and record), with no resume, dedupe or part objects: the ceiling.

Each reader has a warm-up read, then the readers take turns for ``--repeats`` measured reads
(the Node script warms up in each of its processes); a read stops at the last
part (the stream itself would only end after an idle timeout). The table shows medians: parts/s
(wall), CPU seconds per 10,000 parts (the reader's process only; the emulator runs in its own),
and both as ratios to the bare loop. Results go to ``bench/results/latest.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from trigger_django.client import TriggerClient
from trigger_django.client._client import SDK_VERSION
from trigger_django.emulator.testing import EmulatorProcess

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results" / "latest.json"
NODE_SCRIPT = BENCH_DIR / "sdk_fetch_stream.mjs"
SECRET_KEY = "tr_dev_bench_" + "0123456789abcdef" * 3
PER = 10_000


def small_parts(count: int) -> list[Any]:
    # Roughly what an AI text stream carries: a short delta per part.
    return [{"i": i, "delta": "lorem "} for i in range(count)]


async def read_with_client(
    url: str, token: str, run_id: str, expected: int
) -> tuple[int, float, float]:
    async with TriggerClient(url, access_token=token) as client:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        count = 0
        async with client.read_stream(run_id, timeout_seconds=5) as stream:
            async for _part in stream:
                count += 1
                if count >= expected:
                    break
        return count, time.perf_counter() - wall0, time.process_time() - cpu0


async def read_bare(url: str, token: str, run_id: str, expected: int) -> tuple[int, float, float]:
    loads = json.loads
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None)) as client:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        count = 0
        async with aconnect_sse(
            client,
            "GET",
            f"{url}/realtime/v1/streams/{run_id}/default",
            headers={"Authorization": f"Bearer {token}", "Timeout-Seconds": "5"},
        ) as source:
            v2 = source.response.headers.get("x-stream-version") == "v2"
            async for event in source.aiter_sse():
                if v2:
                    if event.event != "batch":
                        continue
                    for rec in loads(event.data)["records"]:
                        loads(rec["body"])
                        count += 1
                else:
                    loads(event.data)
                    count += 1
                if count >= expected:
                    break
        return count, time.perf_counter() - wall0, time.process_time() - cpu0


def read_with_sdk(
    url: str, token: str, run_id: str, expected: int, repeats: int
) -> list[dict[str, float]]:
    result = subprocess.run(
        ["node", str(NODE_SCRIPT), url, token, run_id, "default", str(expected), str(repeats)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        raise SystemExit(f"The SDK benchmark failed:\n{result.stderr}")
    runs: list[dict[str, float]] = json.loads(result.stdout.strip().splitlines()[-1])["runs"]
    return runs


def summarise(runs: list[dict[str, float]]) -> dict[str, float]:
    parts = runs[0]["parts"]
    return {
        "parts_per_s": statistics.median(r["parts"] / r["wall_s"] for r in runs),
        "cpu_s_per_10k": statistics.median(r["cpu_s"] / r["parts"] * PER for r in runs),
        "wall_s": statistics.median(r["wall_s"] for r in runs),
        "parts": parts,
    }


def bench_stream(
    emulator: EmulatorProcess, framing: str, size: int, repeats: int
) -> list[dict[str, Any]]:
    """Measure the three readers on one stream of ``size`` small parts."""
    run_id, token = emulator.trigger(
        "echo-parts", {"parts": small_parts(size)}, stream_version=framing
    )
    emulator.wait_for(lambda: emulator.run(run_id)["status"] != "EXECUTING", 120)
    url = emulator.url

    async def python_reader(name: str) -> tuple[int, float, float]:
        read = read_with_client if name == "read_stream" else read_bare
        return await read(url, token, run_id, size)

    # Warm up each reader once, then take turns so that drift on the machine hits all alike.
    for name in ("read_stream", "bare"):
        asyncio.run(python_reader(name))
    results: dict[str, list[dict[str, float]]] = {"read_stream": [], "sdk": [], "bare": []}
    for _ in range(repeats):
        for name in results:
            if name == "sdk":
                results[name] += read_with_sdk(url, token, run_id, size, 1)
                continue
            count, wall, cpu = asyncio.run(python_reader(name))
            if count != size:
                raise SystemExit(f"{name} got {count} parts, expected {size}")
            results[name].append({"parts": count, "wall_s": wall, "cpu_s": cpu})
    bare = summarise(results["bare"])
    rows = []
    for reader, runs in results.items():
        summary = summarise(runs)
        rows.append(
            {
                "framing": framing,
                "parts": size,
                "reader": reader,
                **summary,
                "speed_vs_bare": summary["parts_per_s"] / bare["parts_per_s"],
                "cpu_vs_bare": summary["cpu_s_per_10k"] / bare["cpu_s_per_10k"],
                "runs": runs,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--framings", nargs="+", default=["v2", "v1"], choices=["v1", "v2"])
    args = parser.parse_args()

    rows: list[dict[str, Any]] = []
    print(HEADER)
    print("-" * len(HEADER))
    with EmulatorProcess(secret_key=SECRET_KEY, stream_version="v2") as emulator:
        for framing in args.framings:
            for size in args.sizes:
                new_rows = bench_stream(emulator, framing, size, args.repeats)
                for row in new_rows:
                    print_row(row)
                rows.extend(new_rows)

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "python": platform.python_version(),
                "node": subprocess.run(
                    ["node", "--version"], capture_output=True, text=True
                ).stdout.strip(),
                "sdk_version": SDK_VERSION,
                "repeats": args.repeats,
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nWritten to {RESULTS.relative_to(REPO_ROOT)}")


HEADER = (
    f"{'framing':7} {'parts':>7} {'reader':12} {'parts/s':>10} {'CPU s/10k':>10} "
    f"{'speed/bare':>10} {'CPU/bare':>9}"
)


def print_row(row: dict[str, Any]) -> None:
    print(
        f"{row['framing']:7} {row['parts']:>7} {row['reader']:12} "
        f"{row['parts_per_s']:>10,.0f} {row['cpu_s_per_10k']:>10.3f} "
        f"{row['speed_vs_bare']:>10.2f} {row['cpu_vs_bare']:>9.2f}",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
