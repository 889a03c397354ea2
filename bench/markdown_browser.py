"""Chromium main-thread time while a ``render="markdown"`` answer streams into
``trigger-django.js``, at 1, 10 and 100 KB (20-character parts at 200 parts/s, as issue 12 asks).

The parts are the server's own (``trigger_django.live.markdown.MarkdownSource`` over the answer),
delivered by a stand-in WebSocket inside the page at the hub's pace (a frame every 16 ms), so the
figure is the browser's cost alone: applying ``md`` items (appending frozen blocks, replacing the
tail), not the network or the server. Reported: main-thread busy time (CDP
``Performance.getMetrics`` ``TaskDuration``) as a share of the stream's duration, and the longest
task (``PerformanceObserver`` long tasks, over 50 ms). Run ``python -m bench.markdown_browser``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

from bench.markdown_feed import _Parts
from bench.markdown_render import SIZES, answer_of
from trigger_django.live.markdown import MarkdownSource

STATIC = Path(__file__).resolve().parent.parent / "trigger_django/static/trigger_django"
SCRIPT = STATIC / "trigger-django.js"
STYLE = STATIC / "trigger-django.css"
PARTS_PER_SECOND = 200
FRAME_MS = 16

# A WebSocket stand-in: answers the subscribe, then sends the parts at the hub's pace.
FAKE_SOCKET = """
window.__longest = 0; window.__long = 0; window.__done = false;
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    window.__long += 1; window.__longest = Math.max(window.__longest, entry.duration);
  }
}).observe({type: "longtask", buffered: true});
class FakeSocket {
  constructor() {
    this.readyState = 0;
    setTimeout(() => { this.readyState = 1; this.onopen(); }, 0);
  }
  send(text) {
    const message = JSON.parse(text);
    if (message.type !== "subscribe") { return; }
    const sub = message.sub;
    this.onmessage({data: JSON.stringify({type: "subscribed", sub, ticket: "t"})});
    const parts = window.__parts, perFrame = window.__perFrame;
    let at = 0;
    const timer = setInterval(() => {
      const batch = parts.slice(at, at + perFrame);
      at += perFrame;
      if (batch.length) {
        this.onmessage({data: '{"type":"parts","streams":[{"sub":' + JSON.stringify(sub)
          + ',"parts":[' + batch.join(",") + "]}]}"});
      }
      if (at >= parts.length) {
        clearInterval(timer);
        this.onmessage({data: JSON.stringify({type: "complete", sub})});
      }
    }, window.__frameMs);
  }
  close() {}
}
FakeSocket.OPEN = 1;
window.WebSocket = FakeSocket;
document.addEventListener("trigger:complete", () => { window.__done = true; });
"""


async def _parts(size: int) -> list[str]:
    source = MarkdownSource(_Parts(answer_of(size)))
    return [item.data async for item in source.open(None, 60)]


async def bench_size(browser: Any, size: int) -> dict[str, Any]:
    parts = await _parts(size)
    page = await browser.new_page()
    try:
        session = await page.context.new_cdp_session(page)
        await session.send("Performance.enable")
        per_frame = max(1, round(PARTS_PER_SECOND * FRAME_MS / 1000))
        setup = (
            f"window.__parts = {json.dumps(parts)}; window.__perFrame = {per_frame};"
            f" window.__frameMs = {FRAME_MS};" + FAKE_SOCKET
        )
        viewer = (
            '<main><div data-trigger-stream data-ticket="t" data-run-id="run_bench" '
            'data-key="default" data-render="markdown" data-throttle-ms="16">'
            "<div data-trigger-output></div></div></main>"
        )
        await page.set_content(f"<!doctype html><html><head></head><body>{viewer}</body></html>")
        await page.add_style_tag(content=STYLE.read_text())
        await page.add_script_tag(content=setup)

        def busy(metrics: dict[str, Any]) -> float:
            return next(m["value"] for m in metrics["metrics"] if m["name"] == "TaskDuration")

        before = busy(await session.send("Performance.getMetrics"))
        started = await page.evaluate("performance.now()")
        await page.add_script_tag(content=SCRIPT.read_text())
        await page.wait_for_function("window.__done", timeout=600_000, polling=100)
        ended = await page.evaluate("performance.now()")
        after = busy(await session.send("Performance.getMetrics"))
        duration = (ended - started) / 1000
        return {
            "size": size,
            "parts": len(parts),
            "seconds": duration,
            "busy_share": (after - before) / duration,
            "long_tasks": await page.evaluate("window.__long"),
            "longest_ms": await page.evaluate("window.__longest"),
        }
    finally:
        await page.close()


async def run(sizes: list[int]) -> list[dict[str, Any]]:
    from playwright.async_api import async_playwright

    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or "chromium"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            return [await bench_size(browser, size) for size in sizes]
        finally:
            await browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    args = parser.parse_args()
    rows = asyncio.run(run(args.sizes))
    print(f"markdown in Chromium, 20-character parts at {PARTS_PER_SECOND} parts/s")
    print(f"{'answer':>8} {'parts':>6} {'stream':>8} {'main thread busy':>17} {'long tasks':>11}")
    for row in rows:
        print(
            f"{row['size'] // 1000:>6} KB {row['parts']:>6} {row['seconds']:>7.1f}s"
            f" {row['busy_share'] * 100:>15.1f} % {row['long_tasks']:>5}"
            f" (longest {row['longest_ms']:.0f} ms)"
        )


if __name__ == "__main__":
    main()
