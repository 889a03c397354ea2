"""Per-flush cost of the server-side markdown renderer (`trigger_django.markdown.MarkdownStream`)
as an answer grows: 1 KB, 10 KB and 100 KB answers streamed in 20-character parts, with a
flush after every part (the worst case: the hub flushes at most once per coalescing window).

Times are the flushing thread's CPU time (``time.thread_time``), so that other processes on a
shared machine do not show up as render cost. The headline is the median flush over the whole
stream: if the cost grew with the answer, the 100 KB median (taken half-way, at ~50 KB) would be
far above the 1 KB one; it should stay flat, within 2x, because frozen blocks are never rendered
again. The last tenth's median is shown too. Run ``python -m bench.markdown_render``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from tests.markdown_corpus import ANSWERS
from trigger_django.markdown import MarkdownStream

# Sections of ordinary AI answers (headings, lists, tables, fences, links, emphasis). The
# corpus's deliberately pathological pieces (unresolved reference labels, hostile and
# unterminated markup) are left out: an unresolved ``[label]`` keeps everything after it open.
SECTIONS = ("overview", "code", "lists", "setext", "blockquote")
SIZES = (1_000, 10_000, 100_000)
PART = 20


def answer_of(size: int) -> str:
    pieces: list[str] = []
    length = 0
    index = 0
    while length < size:
        section = ANSWERS[SECTIONS[index % len(SECTIONS)]] + "\n"
        pieces.append(section)
        length += len(section)
        index += 1
    return "".join(pieces)[:size]


def bench_size(size: int, part: int = PART) -> dict[str, Any]:
    text = answer_of(size)
    stream = MarkdownStream()
    times: list[float] = []
    for start in range(0, len(text), part):
        stream.feed(text[start : start + part])
        began = time.thread_time()
        stream.flush()
        times.append(time.thread_time() - began)
    began = time.thread_time()
    stream.finish()
    finish = time.thread_time() - began
    last = times[-max(1, len(times) // 10) :]
    return {
        "size": size,
        "flushes": len(times),
        "median_us": statistics.median(times) * 1e6,
        "last_tenth_median_us": statistics.median(last) * 1e6,
        "p99_us": sorted(times)[int(len(times) * 0.99)] * 1e6,
        "max_us": max(times) * 1e6,
        "finish_us": finish * 1e6,
        "total_ms": sum(times) * 1e3,
    }


def run(repeats: int = 3) -> list[dict[str, Any]]:
    """Median over `repeats` runs of each size (after one warm-up run)."""
    bench_size(SIZES[0])
    rows = []
    for size in SIZES:
        runs = [bench_size(size) for _ in range(repeats)]
        rows.append(
            {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            | {"size": size, "flushes": runs[0]["flushes"]}
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = run(args.repeats)
    print(f"markdown render, {PART}-character parts, one flush per part, CPU time per flush")
    print(
        f"{'answer':>8} {'flushes':>8} {'median':>10} {'last 10%':>10} {'p99':>10}"
        f" {'max':>10} {'finish':>10} {'total':>10}"
    )
    for row in rows:
        print(
            f"{row['size'] // 1000:>6} KB {row['flushes']:>8} {row['median_us']:>8.0f}µs"
            f" {row['last_tenth_median_us']:>8.0f}µs {row['p99_us']:>8.0f}µs"
            f" {row['max_us']:>8.0f}µs {row['finish_us']:>8.0f}µs {row['total_ms']:>8.0f}ms"
        )
    ratio = rows[-1]["median_us"] / rows[0]["median_us"]
    print(f"100 KB / 1 KB median per-flush CPU: {ratio:.2f}x (target: within 2x)")


if __name__ == "__main__":
    main()
