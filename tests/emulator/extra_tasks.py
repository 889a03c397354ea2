"""Simulated tasks loaded with ``trigger_emulator --tasks-module tests.emulator.extra_tasks``."""

from __future__ import annotations

from typing import Any

from trigger_django.emulator import InputTimeoutError, RunContext, register_task


@register_task("shout-and-wait")
async def shout_and_wait(ctx: RunContext) -> Any:
    """Streams the payload's words upper-cased, then waits briefly for a ``reply`` input."""
    for word in str(ctx.payload.get("text", "")).split():
        await ctx.stream("loud").append(word.upper())
    try:
        reply = await ctx.wait_for_input("reply", timeout=float(ctx.payload.get("wait", 5)))
    except InputTimeoutError:
        ctx.fail("no reply")
        return None
    return {"reply": reply}
