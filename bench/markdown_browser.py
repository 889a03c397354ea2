"""Chromium main-thread time while a ``render="markdown"`` answer streams into
``trigger-django.js``, at 1, 10 and 100 KB (20-character parts at 200 parts/s, as issue 12 asks).

The parts are the server's own (``trigger_django.live.markdown.MarkdownSource`` over the answer),
delivered by a stand-in WebSocket inside the page at the hub's pace (a frame every 16 ms), so the
figure is the browser's cost alone: applying ``md`` items (appending frozen blocks, replacing the
tail), not the network or the server. The viewer is ``{% stream_viewer %}``'s own markup with the
package's stylesheet. Reported: main-thread busy time (CDP ``Performance.getMetrics``
``TaskDuration``) as a share of the stream's duration, and the longest task
(``PerformanceObserver`` long tasks, over 50 ms). The same run streams the same text in text mode
(``textContent``, parts without ``md``) as the baseline: what the harness, the socket messages
and a frame per update cost anyway. ``--trace`` records a Chromium trace of each markdown run and
prints where the main thread's time went (self time per trace event). Run
``python -m bench.markdown_browser``.
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
# The page scrolls along with the answer's end.
FAKE_SOCKET = """
window.__longest = 0; window.__long = 0; window.__done = false; window.__since = Infinity;
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    if (entry.startTime < window.__since) { continue; }  // the harness's own setup
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
// The reader follows the end of the answer, as a chat page scrolls with it (off-screen content
// costs less than on-screen: without this the figures would flatter the page).
const follow = setInterval(() => {
  const root = document.scrollingElement;
  root.scrollTop = root.scrollHeight;
  if (window.__done) { clearInterval(follow); }
}, 100);
"""


# {% stream_viewer render="markdown" %}'s markup before anything arrived (see
# templates/trigger_django/stream_viewer.html), so that the package's stylesheet applies as it
# does in a page.
VIEWER = (
    '<div class="trigger-stream" data-trigger-stream data-state="connecting" data-ticket="t"'
    ' data-run-id="run_bench" data-key="default" data-timeout="60" data-throttle-ms="16"{render}>'
    '<p class="trigger-stream__status" data-trigger-status>Loading…</p>'
    '<div class="trigger-stream__output" data-trigger-output role="log" aria-label="Stream output"'
    ' aria-busy="true">{output}</div>'
    '<p class="trigger-stream__announce" data-trigger-announce role="status"></p>'
    '<p class="trigger-stream__error" data-trigger-error hidden></p></div>'
)
MARKDOWN_OUTPUT = (
    '<div class="trigger-md__blocks" data-trigger-md-blocks></div>'
    '<div class="trigger-md__tail" data-trigger-md-tail></div>'
)


async def _parts(size: int, markdown: bool = True) -> list[str]:
    base = _Parts(answer_of(size))
    if not markdown:
        return [item.data for item in base.items]
    source = MarkdownSource(base)
    return [item.data async for item in source.open(None, 60)]


def _viewer(markdown: bool) -> str:
    if markdown:
        return VIEWER.format(render=' data-render="markdown"', output=MARKDOWN_OUTPUT)
    return VIEWER.format(render="", output="")


async def bench_size(
    browser: Any, size: int, *, markdown: bool = True, trace: bool = False
) -> dict[str, Any]:
    parts = await _parts(size, markdown)
    page = await browser.new_page()
    try:
        session = await page.context.new_cdp_session(page)
        await session.send("Performance.enable")
        per_frame = max(1, round(PARTS_PER_SECOND * FRAME_MS / 1000))
        setup = (
            f"window.__parts = {json.dumps(parts)}; window.__perFrame = {per_frame};"
            f" window.__frameMs = {FRAME_MS};" + FAKE_SOCKET
        )
        await page.set_content(
            '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>bench</title>'
            f"</head><body><main>{_viewer(markdown)}</main></body></html>"
        )
        await page.add_style_tag(content=STYLE.read_text())
        await page.add_script_tag(content=setup)

        def busy(metrics: dict[str, Any]) -> float:
            return next(m["value"] for m in metrics["metrics"] if m["name"] == "TaskDuration")

        if trace:
            await browser.start_tracing(page=page, categories=TRACE_CATEGORIES)
        before = busy(await session.send("Performance.getMetrics"))
        started = await page.evaluate("window.__since = performance.now()")
        await page.add_script_tag(content=SCRIPT.read_text())
        await page.wait_for_function("window.__done", timeout=600_000, polling=100)
        ended = await page.evaluate("performance.now()")
        after = busy(await session.send("Performance.getMetrics"))
        duration = (ended - started) / 1000
        breakdown = _breakdown(await browser.stop_tracing()) if trace else None
        return {
            "breakdown": breakdown,
            "markdown": markdown,
            "size": size,
            "parts": len(parts),
            "seconds": duration,
            "busy_share": (after - before) / duration,
            "long_tasks": await page.evaluate("window.__long"),
            "longest_ms": await page.evaluate("window.__longest"),
        }
    finally:
        await page.close()


TRACE_CATEGORIES = ["devtools.timeline", "disabled-by-default-devtools.timeline", "v8.execute"]


def _breakdown(trace: bytes, top: int = 12) -> dict[str, Any]:
    """From a Chromium trace: the busiest renderer main thread's CPU time (``tdur``, so that
    time the thread spent descheduled on a shared machine does not count) in top-level tasks,
    its longest task by CPU, and self CPU time (ms) per trace event, largest first."""
    loaded = json.loads(trace)
    events = loaded["traceEvents"] if isinstance(loaded, dict) else loaded
    mains = {
        (e["pid"], e["tid"])
        for e in events
        if e.get("ph") == "M" and e.get("name") == "thread_name"
        and e.get("args", {}).get("name") == "CrRendererMain"
    }  # fmt: skip
    threads: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for event in events:
        thread = (event.get("pid"), event.get("tid"))
        if thread in mains and event.get("ph") == "X" and "dur" in event:
            threads.setdefault(thread, []).append(event)  # type: ignore[arg-type]
    if not threads:
        return {"cpu_ms": 0.0, "longest_cpu_ms": 0.0, "self": []}
    busiest = max(threads.values(), key=lambda es: sum(e["dur"] for e in es))
    busiest.sort(key=lambda e: (e["ts"], -e["dur"]))
    self_time: dict[str, float] = {}
    stack: list[dict[str, Any]] = []
    cpu = longest = 0.0
    for event in busiest:
        while stack and stack[-1]["ts"] + stack[-1]["dur"] <= event["ts"]:
            stack.pop()
        spent = event.get("tdur", event["dur"])
        if stack:
            parent = stack[-1]["name"]
            self_time[parent] = self_time.get(parent, 0.0) - spent
        else:
            cpu += spent
            longest = max(longest, spent)
        self_time[event["name"]] = self_time.get(event["name"], 0.0) + spent
        stack.append(event)
    ranked = sorted(self_time.items(), key=lambda kv: -kv[1])[:top]
    return {
        "cpu_ms": cpu / 1000,
        "longest_cpu_ms": longest / 1000,
        "self": [(name, micros / 1000) for name, micros in ranked],
    }


async def run(sizes: list[int], trace: bool = False) -> list[dict[str, Any]]:
    from playwright.async_api import async_playwright

    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or "chromium"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            rows = []
            for size in sizes:
                rows.append(await bench_size(browser, size, markdown=False))
                rows.append(await bench_size(browser, size, trace=trace))
            return rows
        finally:
            await browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    parser.add_argument("--trace", action="store_true", help="print where the time went")
    args = parser.parse_args()
    rows = asyncio.run(run(args.sizes, args.trace))
    print(f"markdown in Chromium, 20-character parts at {PARTS_PER_SECOND} parts/s")
    print(
        f"{'answer':>8} {'mode':>8} {'parts':>6} {'stream':>8} {'main thread busy':>17}"
        f" {'long tasks':>11}"
    )
    for row in rows:
        print(
            f"{row['size'] // 1000:>6} KB {'markdown' if row['markdown'] else 'text':>8}"
            f" {row['parts']:>6} {row['seconds']:>7.1f}s"
            f" {row['busy_share'] * 100:>15.1f} % {row['long_tasks']:>5}"
            f" (longest {row['longest_ms']:.0f} ms)"
        )
        if row["breakdown"]:
            cpu = row["breakdown"]["cpu_ms"] / 1000 / row["seconds"]
            print(
                f"{'':>20} main-thread CPU (trace) {cpu * 100:.1f} % of the stream, longest"
                f" task {row['breakdown']['longest_cpu_ms']:.0f} ms CPU; self CPU by event:"
            )
            for name, ms in row["breakdown"]["self"]:
                print(f"{'':>20} {ms:>9.0f} ms  {name}")
    by_size = {(row["size"], row["markdown"]): row for row in rows}
    for size in args.sizes:
        text, markdown = by_size[(size, False)], by_size[(size, True)]
        print(
            f"{size // 1000} KB: markdown busy {markdown['busy_share'] * 100:.1f} % ="
            f" {markdown['busy_share'] / max(text['busy_share'], 1e-9):.2f}x text mode's"
            f" {text['busy_share'] * 100:.1f} % (target: markdown under 10 %, no task over 50 ms)"
        )


if __name__ == "__main__":
    main()
