"""Simulated tasks: Python coroutines that write streams and wait for input like real tasks.

Register one with :func:`register_task`; triggering its id runs it inside the emulator. A run of a
task id with no registered function stays ``EXECUTING`` so an external writer (the SDK) can use it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from trigger_django.emulator.state import (
    INPUT_STREAM_PREFIX,
    EmulatorConfig,
    Run,
    Stream,
    task_run_error,
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
        *,
        suspend: bool = True,
    ) -> Any:
        """The ``data`` of the next input sent to ``stream_id`` (earlier sends are buffered).

        Like the SDK's ``.wait()``, a run that has to wait is suspended: its status is
        ``WAITING_TO_RESUME`` (the SDK's ``WAITING``) until the input arrives, then
        ``EXECUTING`` again. ``suspend=False`` waits as ``.once()`` does, still executing.
        """
        stream: Stream = self._run.stream(INPUT_STREAM_PREFIX + stream_id)
        cursor = self._run.input_cursors.get(stream_id, 0)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        suspended = False
        try:
            while cursor >= len(stream):
                if suspend and not suspended:
                    self._run.set_status("WAITING_TO_RESUME")
                    suspended = True
                changed = stream.changed()
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    changed.cancel()
                    raise InputTimeoutError(f"No input on {stream_id!r} within {timeout} s.")
                try:
                    await asyncio.wait_for(changed, remaining)
                except TimeoutError:
                    raise InputTimeoutError(
                        f"No input on {stream_id!r} within {timeout} s."
                    ) from None
        finally:
            if suspended and not self._run.is_finished:
                self._run.set_status("EXECUTING")
        self._run.input_cursors[stream_id] = cursor + 1
        received = [item for item in self._run.inputs if item.stream_id == stream_id]
        return received[cursor].data

    def set_metadata(self, **values: Any) -> None:
        """Merge ``values`` into the run's metadata (one run-shape update)."""
        self._run.set_metadata(values)

    def set_status(self, status: str) -> None:
        """Put the run in another unfinished DB status, e.g. ``"WAITING_TO_RESUME"``."""
        self._run.set_status(status)

    def add_tags(self, *tags: str) -> None:
        self._run.add_tags(list(tags))

    def complete(self, output: Any = None) -> None:
        self._run.finish("COMPLETED_SUCCESSFULLY", output=output)

    def fail(self, error: Any) -> None:
        self._run.finish("COMPLETED_WITH_ERRORS", error=task_run_error(error))


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
        run.finish("COMPLETED_WITH_ERRORS", error=task_run_error(error))
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


#: How often the demo writer reports progress: every this fraction of its tokens.
_PROGRESS_STEP = 0.05


@register_task("demo-ai-writer")
async def demo_ai_writer(ctx: RunContext) -> Any:
    """Streams the demo answer to ``ai-output``, reporting ``{"progress", "step"}`` in its
    metadata, then waits (``WAITING``) for ``approval`` and completes."""
    payload = ctx.payload if isinstance(ctx.payload, dict) else {}
    prompt = str(payload.get("prompt", ""))
    rate = float(payload.get("tokens_per_second") or ctx.config.tokens_per_second)
    delay = 1.0 / rate if rate > 0 else 0.0
    output = ctx.stream("ai-output")
    tokens = demo_answer_tokens(prompt)
    ctx.set_metadata(stage="writing", progress=0.0, step="Writing")
    reported = 0.0
    for index, token in enumerate(tokens, start=1):
        await output.append(token)
        progress = round(index / len(tokens), 2)
        if progress - reported >= _PROGRESS_STEP and index < len(tokens):
            ctx.set_metadata(progress=progress)
            reported = progress
        if delay:
            await asyncio.sleep(delay)
    ctx.set_metadata(stage="awaiting-approval", progress=1.0, step="Waiting for approval")
    decision = await ctx.wait_for_input("approval", timeout=3600)
    decision = decision if isinstance(decision, dict) else {}
    reviewer = str(decision.get("reviewer") or "someone")
    if decision.get("approved") is True:
        await output.append(f"\n\nApproved by {reviewer}.")
        ctx.set_metadata(stage="approved", step="Approved")
        return {"approved": True, "reviewer": reviewer}
    await output.append(f"\n\nRejected by {reviewer}.")
    ctx.set_metadata(stage="rejected", step="Rejected")
    return {"approved": False}


_CITY = re.compile(r"\bin ([A-Z][\w\- ]*?)(?:[?.!,]|$)")


def demo_weather_temperature(city: str) -> int:
    """The (deterministic) temperature ``getWeather`` reports for ``city``, in degrees."""
    return 5 + hashlib.sha256(city.strip().lower().encode()).digest()[0] % 26


def _text_deltas(text: str) -> list[dict[str, Any]]:
    # AI SDK 4 names the text ``textDelta`` (as in the seed's weather example), AI SDK 5
    # ``text``: both are given, so either reading works.
    return [
        {"type": "text-delta", "textDelta": token, "text": token} for token in _TOKEN.findall(text)
    ]


def demo_weather_parts(city: str) -> list[dict[str, Any]]:
    """The parts ``demo-weather-agent`` writes for ``city``, in order (AI SDK stream parts):
    ``text-delta`` parts, a ``tool-call`` of ``getWeather`` with ``{"location"}``, its
    ``tool-result`` with the temperature, then ``text-delta`` parts of the answer."""
    city = " ".join(city.split()) or "Paris"
    temperature = demo_weather_temperature(city)
    call_id = "call_" + hashlib.sha256(city.encode()).hexdigest()[:12]
    args = {"location": city}  # as in the seed's example: toolCall.args.location
    return [
        *_text_deltas(f"Let me check the weather in {city}."),
        {"type": "tool-call", "toolCallId": call_id, "toolName": "getWeather", "args": args},
        {
            "type": "tool-result",
            "toolCallId": call_id,
            "toolName": "getWeather",
            "args": args,
            "result": {"city": city, "temperature": temperature, "unit": "celsius"},
        },
        *_text_deltas(f"The weather in {city} is {temperature} degrees."),
    ]


@register_task("demo-weather-agent")
async def demo_weather_agent(ctx: RunContext) -> Any:
    """An agent that calls a weather tool: writes :func:`demo_weather_parts` to ``openai``.

    Payload ``{"city"?: str, "prompt"?: str, "tokens_per_second"?: number}``; without a city,
    the one named after "in" in the prompt, else Paris.
    """
    payload = ctx.payload if isinstance(ctx.payload, dict) else {}
    city = str(payload.get("city") or "")
    if not city:
        match = _CITY.search(str(payload.get("prompt") or ""))
        city = match.group(1) if match else "Paris"
    rate = float(payload.get("tokens_per_second") or ctx.config.tokens_per_second)
    delay = 1.0 / rate if rate > 0 else 0.0
    output = ctx.stream("openai")
    parts = demo_weather_parts(city)
    ctx.set_metadata(progress=0.0, step="Thinking")
    for part in parts:
        if part["type"] == "tool-call":
            ctx.set_metadata(progress=0.5, step="Calling getWeather")
        await output.append(part)
        if part["type"] == "tool-result":
            ctx.set_metadata(progress=0.75, step="Answering")
        if delay:
            await asyncio.sleep(delay)
    ctx.set_metadata(progress=1.0, step="Done")
    position = next(index for index, part in enumerate(parts) if part["type"] == "tool-result")
    result = parts[position]["result"]
    answer = "".join(part["textDelta"] for part in parts[position + 1 :])
    return {"city": result["city"], "temperature": result["temperature"], "answer": answer}


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
