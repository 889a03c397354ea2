"""Simulated tasks for the bench and the soak, loaded into the emulator with
``--tasks-module bench.emulator_tasks``.

``bench-writer`` writes ``{"n": i, "t": <time.time() at the write>}`` parts at a fixed rate, on an
absolute schedule (no drift), so that every viewer can tell which part it got, whether it got it
twice or out of order, and how long after the write it arrived.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from trigger_django.emulator.tasks import RunContext, register_task


@register_task("bench-writer")
async def bench_writer(ctx: RunContext) -> Any:
    """Payload: ``count`` parts at ``rate`` parts/s (0: as fast as possible) to ``key``,
    starting ``phase`` seconds after the input ``go`` arrived on input stream ``go`` (when set),
    each padded with ``pad`` characters."""
    payload = ctx.payload if isinstance(ctx.payload, dict) else {}
    count = int(payload.get("count", 0))
    rate = float(payload.get("rate", 0))
    key = str(payload.get("key") or "default")
    pad = "x" * int(payload.get("pad", 0))
    if payload.get("go"):
        await ctx.wait_for_input(str(payload["go"]), timeout=3600)
    loop = asyncio.get_running_loop()
    start = loop.time() + float(payload.get("phase", 0))
    output = ctx.stream(key)
    for n in range(count):
        if rate > 0:
            delay = start + n / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        part: dict[str, Any] = {"n": n, "t": time.time()}
        if pad:
            part["pad"] = pad
        await output.append(part)
    return {"count": count}
