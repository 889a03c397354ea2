"""Simulated tasks: Python coroutines that write streams and wait for input like real tasks.

Register one with :func:`register_task`; triggering its id runs it inside the emulator. A run of a
task id with no registered function stays ``EXECUTING`` so an external writer (the SDK) can use it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from trigger_django.emulator.state import (
    INPUT_STREAM_PREFIX,
    EmulatorConfig,
    Run,
    Stream,
    js_json,
)

logger = logging.getLogger(__name__)

TaskFunction = Callable[["RunContext"], Awaitable[Any]]
_F = TypeVar("_F", bound=TaskFunction)

_REGISTRY: dict[str, TaskFunction] = {}
#: Consulted, in order, before the registry (``register_task_resolver``).
_RESOLVERS: list[Callable[[str], TaskFunction | None]] = []


def register_task(task_id: str) -> Callable[[_F], _F]:
    """Register ``async def task(ctx: RunContext) -> Any`` as the simulated task ``task_id``."""
    if not task_id or "/" in task_id:
        raise ValueError(f"Invalid task id {task_id!r}.")

    def decorator(function: _F) -> _F:
        _REGISTRY[task_id] = function
        return function

    return decorator


def register_task_resolver(resolver: Callable[[str], TaskFunction | None]) -> None:
    """Let ``resolver(task_id)`` supply the function of a task at trigger time, ahead of the
    registry (``trigger_django.testing`` scripts a project's tasks, even built-in ids, this
    way); it returns ``None`` to leave the task to the registry."""
    _RESOLVERS.append(resolver)


def registered_task(task_id: str) -> TaskFunction | None:
    for resolver in _RESOLVERS:
        function = resolver(task_id)
        if function is not None:
            return function
    return _REGISTRY.get(task_id)


class InputTimeoutError(TimeoutError):
    """No input arrived on the input stream within the timeout given to ``wait_for_input``."""


class StreamWriter:
    def __init__(self, run: Run, key: str) -> None:
        self._run = run
        self._key = key

    async def append(self, part: Any) -> None:
        """Append one part (any JSON value) to the output stream."""
        self._run.add_realtime_stream(self._key)
        self._run.stream(self._key).append_part(part)
        # Yield so readers get a chance to run between parts of a tight loop.
        await asyncio.sleep(0)


class RunContext:
    """What a simulated task sees of its run."""

    def __init__(self, run: Run, config: EmulatorConfig) -> None:
        self._run = run
        self.config = config

    @property
    def run_id(self) -> str:
        return self._run.id

    @property
    def payload(self) -> Any:
        return self._run.payload

    @property
    def task_identifier(self) -> str:
        return self._run.task_identifier

    def stream(self, key: str = "default") -> StreamWriter:
        return StreamWriter(self._run, key)

    async def wait_for_input(
        self,
        stream_id: str,
        timeout: float | None = None,  # noqa: ASYNC109  (the interface tasks are written against)
    ) -> Any:
        """The ``data`` of the next input sent to ``stream_id`` (earlier sends are buffered)."""
        stream: Stream = self._run.stream(INPUT_STREAM_PREFIX + stream_id)
        cursor = self._run.input_cursors.get(stream_id, 0)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while cursor >= len(stream):
            changed = stream.changed()
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                changed.cancel()
                raise InputTimeoutError(f"No input on {stream_id!r} within {timeout} s.")
            try:
                await asyncio.wait_for(changed, remaining)
            except TimeoutError:
                raise InputTimeoutError(f"No input on {stream_id!r} within {timeout} s.") from None
        self._run.input_cursors[stream_id] = cursor + 1
        received = [item for item in self._run.inputs if item.stream_id == stream_id]
        return received[cursor].data

    def set_metadata(self, **values: Any) -> None:
        self._run.set_metadata(values)

    def complete(self, output: Any = None) -> None:
        self._run.finish("COMPLETED_SUCCESSFULLY", output=output)

    def fail(self, error: Any) -> None:
        self._run.finish("COMPLETED_WITH_ERRORS", error=_error_json(error))


def _error_json(error: Any) -> Any:
    """The error as a ``TaskRunError`` (the shape the SDK validates run errors against)."""
    if isinstance(error, BaseException):
        return {
            "type": "BUILT_IN_ERROR",
            "name": type(error).__name__,
            "message": str(error),
            "stackTrace": "".join(traceback.format_exception(error)),
        }
    if isinstance(error, str):
        return {"type": "STRING_ERROR", "raw": error}
    if isinstance(error, dict) and "type" in error:
        return error
    return {"type": "CUSTOM_ERROR", "raw": js_json(error)}


async def execute(function: TaskFunction, run: Run, config: EmulatorConfig) -> None:
    """Run a simulated task to its end and record the outcome on the run."""
    context = RunContext(run, config)
    try:
        output = await function(context)
    except asyncio.CancelledError:
        run.finish("CANCELED")
        raise
    except Exception as error:
        logger.info("Simulated task %s of %s failed: %r", run.task_identifier, run.id, error)
        run.finish("COMPLETED_WITH_ERRORS", error=_error_json(error))
    else:
        run.finish("COMPLETED_SUCCESSFULLY", output=output)


# -- built-in tasks ----------------------------------------------------------------------------

_OPENINGS = (
    "Here is a short answer about",
    "Let me walk you through",
    "A quick overview of",
    "Good question! Let's look at",
)
_POINTS = (
    "Start small and keep every step observable.",
    "Measure first, then change one thing at a time.",
    "Write the test before the fix, so the bug stays fixed.",
    "Prefer plain data over clever abstractions.",
    "Stream results as they arrive instead of waiting for the end.",
    "Name things after what they mean, not how they work.",
)
_TOKEN = re.compile(r"\s*\S+")


def demo_answer_text(prompt: str) -> str:
    """The full markdown answer ``demo-ai-writer`` streams for ``prompt`` (deterministic)."""
    topic = " ".join(prompt.split()) or "your question"
    digest = hashlib.sha256(topic.encode()).digest()
    opening = _OPENINGS[digest[0] % len(_OPENINGS)]
    first = _POINTS[digest[1] % len(_POINTS)]
    second = _POINTS[(digest[1] + 1 + digest[2] % (len(_POINTS) - 1)) % len(_POINTS)]
    return (
        f"## {topic[:60]}\n\n"
        f"{opening} **{topic}**. The idea is simple, and the details matter more than the "
        f"headline, so let us go through them one at a time.\n\n"
        f"- {first}\n"
        f"- {second}\n\n"
        f"In practice, try it on a small example first and watch what happens. "
        f"If the result surprises you, that is the most useful thing you will learn today."
    )


def demo_answer_tokens(prompt: str) -> list[str]:
    """The tokens ``demo-ai-writer`` appends, in order; ``"".join`` gives the answer text."""
    return _TOKEN.findall(demo_answer_text(prompt))


@register_task("demo-ai-writer")
async def demo_ai_writer(ctx: RunContext) -> Any:
    payload = ctx.payload if isinstance(ctx.payload, dict) else {}
    prompt = str(payload.get("prompt", ""))
    rate = float(payload.get("tokens_per_second") or ctx.config.tokens_per_second)
    delay = 1.0 / rate if rate > 0 else 0.0
    output = ctx.stream("ai-output")
    ctx.set_metadata(stage="writing")
    for token in demo_answer_tokens(prompt):
        await output.append(token)
        if delay:
            await asyncio.sleep(delay)
    ctx.set_metadata(stage="awaiting-approval")
    decision = await ctx.wait_for_input("approval", timeout=3600)
    decision = decision if isinstance(decision, dict) else {}
    reviewer = str(decision.get("reviewer") or "someone")
    if decision.get("approved") is True:
        await output.append(f"\n\nApproved by {reviewer}.")
        ctx.set_metadata(stage="approved")
        return {"approved": True, "reviewer": reviewer}
    await output.append(f"\n\nRejected by {reviewer}.")
    ctx.set_metadata(stage="rejected")
    return {"approved": False}


@register_task("echo-parts")
async def echo_parts(ctx: RunContext) -> Any:
    payload = ctx.payload if isinstance(ctx.payload, dict) else {}
    parts = payload.get("parts", [])
    if not isinstance(parts, list):
        raise TypeError("echo-parts: payload 'parts' must be a list.")
    key = str(payload.get("key") or "default")
    delay = float(payload.get("delay_ms") or 0) / 1000
    output = ctx.stream(key)
    for part in parts:
        await output.append(part)
        if delay:
            await asyncio.sleep(delay)
    return {"count": len(parts)}
