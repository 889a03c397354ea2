"""Per-part server cost of ``render="markdown"`` in the hub (`trigger_django.live.markdown`): the
`MarkdownSource` transform over a stream of 20-character parts, at 1, 10 and 100 KB answers.

This is what one feed pays per part, whatever the number of viewers (the hub renders once per
stream and process and sends the same encoded item to every viewer): decoding the part, one
`MarkdownStream` flush, encoding the ``md`` item. Times are this process's CPU time (a large
flush runs in a worker thread, see `trigger_django.live.markdown.INLINE_LIMIT`), so other
processes on a shared machine do not count.

Then the event loop while a pathological tail renders (one 100 KB paragraph of ``**a``): the
longest the loop went without running a ticker task that wakes every millisecond, with large
flushes in worker threads (as shipped) and, as the same run's baseline, with every flush on the
loop (``INLINE_LIMIT`` and ``INLINE_SECONDS`` raised past reach); the source suspends before
each part, as a network read does. Run ``python -m bench.markdown_feed``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any
from unittest import mock

from bench.markdown_render import PART, SIZES, answer_of
from trigger_django.live import markdown as live_markdown
from trigger_django.live.hub import Item
from trigger_django.live.markdown import MarkdownSource
from trigger_django.live.protocol import encode_part


class _Parts:
    """A source replaying a fixed answer as v2 parts."""

    key = ("bench", "markdown")

    def __init__(self, text: str, *, suspend: bool = False) -> None:
        #: Suspend before each part, as a read from the network does between its chunks.
        self.suspend = suspend
        self.items = []
        for seq, start in enumerate(range(0, len(text), PART)):
            data = encode_part(str(seq), text[start : start + PART], 0, 0)
            self.items.append(Item((seq, 0), str(seq), data, len(data), str(seq)))

    async def open(self, resume: str | None, idle_timeout: int) -> AsyncIterator[Item]:
        for item in self.items:
            if self.suspend:
                await asyncio.sleep(0)
            yield item

    def describe_error(self, exc: BaseException) -> tuple[int, str]:
        return 500, str(exc)


async def _bench(size: int) -> dict[str, Any]:
    source = MarkdownSource(_Parts(answer_of(size)))
    times: list[float] = []
    sizes: list[int] = []
    items = source.open(None, 60).__aiter__()
    while True:
        began = time.process_time()
        try:
            item = await items.__anext__()
        except StopAsyncIteration:
            break
        times.append(time.process_time() - began)
        sizes.append(item.size)
    return {
        "size": size,
        "parts": len(times),
        "median_us": statistics.median(times) * 1e6,
        "p99_us": sorted(times)[int(len(times) * 0.99)] * 1e6,
        "max_us": max(times) * 1e6,
        "total_ms": sum(times) * 1e3,
        "bytes_per_part": statistics.median(sizes),
    }


def run(repeats: int = 3) -> list[dict[str, Any]]:
    asyncio.run(_bench(SIZES[0]))  # warm-up
    rows = []
    for size in SIZES:
        runs = [asyncio.run(_bench(size)) for _ in range(repeats)]
        rows.append({key: statistics.median(r[key] for r in runs) for key in runs[0]})
    return rows


async def _loop_stall(size: int) -> dict[str, float]:
    """Read a giant open paragraph through `MarkdownSource` while a ticker measures how long
    the event loop went without it."""
    source = MarkdownSource(_Parts(("**a" * (size // 3 + 1))[:size], suspend=True))
    loop = asyncio.get_running_loop()
    longest = 0.0
    done = False

    async def ticker() -> None:
        nonlocal longest
        last = loop.time()
        while not done:
            await asyncio.sleep(0.001)
            now = loop.time()
            longest = max(longest, now - last)
            last = now

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    began = time.perf_counter()
    async for _ in source.open(None, 60):
        pass
    elapsed = time.perf_counter() - began
    done = True
    await ticking
    return {"longest_ms": longest * 1000, "seconds": elapsed}


def loop_stall(size: int = 100_000) -> tuple[dict[str, float], dict[str, float]]:
    """(off the loop as shipped, every flush on the loop) for a ``size``-character paragraph."""
    threaded = asyncio.run(_loop_stall(size))
    with (
        mock.patch.object(live_markdown, "INLINE_LIMIT", 10 * size),
        mock.patch.object(live_markdown, "INLINE_SECONDS", float("inf")),
    ):
        inline = asyncio.run(_loop_stall(size))
    return threaded, inline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = run(args.repeats)
    print(f"markdown in the hub, {PART}-character parts: CPU per part (decode, flush, encode)")
    print(
        f"{'answer':>8} {'parts':>7} {'median':>10} {'p99':>10} {'max':>10}"
        f" {'total':>9} {'item':>7}"
    )
    for row in rows:
        print(
            f"{row['size'] // 1000:>6} KB {row['parts']:>7.0f} {row['median_us']:>8.0f}µs"
            f" {row['p99_us']:>8.0f}µs {row['max_us']:>8.0f}µs {row['total_ms']:>7.0f}ms"
            f" {row['bytes_per_part']:>6.0f}B"
        )
    ratio = rows[-1]["median_us"] / rows[0]["median_us"]
    print(f"100 KB / 1 KB median per-part CPU: {ratio:.2f}x (target: within 2x)")
    threaded, inline = loop_stall()
    print(
        "one 100 KB paragraph of '**a' (a pathological tail): longest event-loop stall"
        f" {threaded['longest_ms']:.0f} ms with large flushes in worker threads, vs"
        f" {inline['longest_ms']:.0f} ms with every flush on the loop"
        f" ({threaded['longest_ms'] / inline['longest_ms']:.2f}x); whole stream"
        f" {threaded['seconds']:.1f}s vs {inline['seconds']:.1f}s"
    )


if __name__ == "__main__":
    main()
