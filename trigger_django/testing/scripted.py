"""Scripted runs: simulated tasks whose steps a test writes (loaded into the emulator process).

The emulator imports this module (``--tasks-module trigger_django.testing.scripted``). A script is
a list of JSON steps, run in order:

``{"write": <any JSON>, "key": "default"}``
    append one part to an output stream
``{"sleep": <seconds>}``
    wait
``{"metadata": {...}}``
    merge into the run's metadata
``{"wait_for_input": "<stream id>", "timeout": <seconds or null>, "echo_to": "<key or null>"}``
    wait for the next input sent to that input stream (and append its data to ``echo_to``)
``{"hold": true}``
    stay ``EXECUTING`` until the test completes the run (``EmulatorProcess.complete_run``)
``{"complete": <output>}`` / ``{"fail": <error>}``
    end the run; a script that just runs out completes with output ``null``

Scripts reach the emulator two ways: in the payload of the built-in task
:data:`SCRIPT_TASK` (``{"steps": [...]}``), or as a file per task id in the directory named by
the environment variable :data:`SCRIPTS_DIR_ENV`, so that a run of *your* task id, triggered by
your own view, follows the script.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trigger_django.emulator.tasks import (
    RunContext,
    TaskFunction,
    register_task,
    register_task_resolver,
)

__all__ = ["SCRIPTS_DIR_ENV", "SCRIPT_TASK", "check_steps", "run_steps", "script_path"]

#: The built-in task that runs the steps given in its payload, ``{"steps": [...]}``.
SCRIPT_TASK = "trigger-django-script"
#: Directory of ``<sha256 of the task id>.json`` scripts, read when a run is triggered.
SCRIPTS_DIR_ENV = "TRIGGER_DJANGO_EMULATOR_SCRIPTS"

_STEP_KINDS = ("write", "sleep", "metadata", "wait_for_input", "hold", "complete", "fail")


def script_path(directory: Path, task_id: str) -> Path:
    """Where the script of ``task_id`` lives in ``directory`` (any task id is a safe name)."""
    return directory / f"{hashlib.sha256(task_id.encode()).hexdigest()}.json"


def check_steps(steps: object) -> list[dict[str, Any]]:
    """``steps`` if it is a valid script, else a ``ValueError`` naming the faulty step."""
    if not isinstance(steps, list):
        raise ValueError(f"A script is a list of steps, not {type(steps).__name__}.")
    for index, step in enumerate(steps):
        kinds = [kind for kind in _STEP_KINDS if isinstance(step, dict) and kind in step]
        if len(kinds) != 1:
            raise ValueError(
                f"Script step {index} ({step!r}) must have exactly one of: "
                f"{', '.join(_STEP_KINDS)}."
            )
        if kinds[0] == "sleep" and not (
            isinstance(step["sleep"], int | float) and step["sleep"] >= 0
        ):
            raise ValueError(f"Script step {index}: sleep needs a number of seconds >= 0.")
        if kinds[0] == "metadata" and not isinstance(step["metadata"], dict):
            raise ValueError(f"Script step {index}: metadata needs an object.")
        if kinds[0] == "wait_for_input" and not isinstance(step["wait_for_input"], str):
            raise ValueError(f"Script step {index}: wait_for_input needs an input stream id.")
    return steps


async def run_steps(ctx: RunContext, steps: Sequence[dict[str, Any]]) -> Any:
    """Play ``steps`` as the run's task; returns the output (a ``fail`` step fails the run)."""
    for step in steps:
        if "write" in step:
            await ctx.stream(str(step.get("key") or "default")).append(step["write"])
        elif "sleep" in step:
            await asyncio.sleep(float(step["sleep"]))
        elif "metadata" in step:
            ctx.set_metadata(**step["metadata"])
        elif "wait_for_input" in step:
            data = await ctx.wait_for_input(step["wait_for_input"], timeout=step.get("timeout"))
            if step.get("echo_to"):
                await ctx.stream(str(step["echo_to"])).append(data)
        elif "hold" in step:
            await asyncio.Event().wait()  # until the run is completed (and the task cancelled)
        elif "complete" in step:
            return step["complete"]
        elif "fail" in step:
            raise ScriptedFailure(step["fail"])
    return None


class ScriptedFailure(Exception):
    """Raised by a ``fail`` step; the run ends ``COMPLETED_WITH_ERRORS`` with its message."""


@register_task(SCRIPT_TASK)
async def _script_from_payload(ctx: RunContext) -> Any:
    payload = ctx.payload if isinstance(ctx.payload, dict) else {}
    return await run_steps(ctx, check_steps(payload.get("steps", [])))


def _script_for(task_id: str) -> TaskFunction | None:
    directory = os.environ.get(SCRIPTS_DIR_ENV)
    if not directory:
        return None
    try:
        document = json.loads(script_path(Path(directory), task_id).read_text())
    except FileNotFoundError:
        return None
    steps = check_steps(document.get("steps"))

    async def scripted(ctx: RunContext) -> Any:
        return await run_steps(ctx, steps)

    return scripted


register_task_resolver(_script_for)
