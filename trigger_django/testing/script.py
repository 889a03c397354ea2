"""A builder for scripted runs: what a simulated task does, step by step."""

from __future__ import annotations

from typing import Any

__all__ = ["Script"]


class Script:
    """The steps of a scripted run, built by chaining::

        Script(key="ai-output").write("Hello", " world").sleep(0.05).metadata(stage="done")

    Give it to ``trigger_emulator.script_task("my-task", script)`` (every later run of your
    task plays it) or ``trigger_emulator.trigger_script(script)`` (one run of a built-in task).
    ``key`` is the output stream ``write`` appends to unless told otherwise.
    """

    def __init__(self, key: str = "default") -> None:
        self.key = key
        self.steps: list[dict[str, Any]] = []

    def __repr__(self) -> str:
        return f"Script({self.steps!r})"

    def _add(self, step: dict[str, Any]) -> Script:
        self.steps.append(step)
        return self

    def write(self, *parts: Any, key: str | None = None) -> Script:
        """Append each part (any JSON value) to the output stream ``key``."""
        for part in parts:
            self._add({"write": part, "key": key or self.key})
        return self

    def sleep(self, seconds: float) -> Script:
        """Wait ``seconds`` (between parts, to see them arrive one by one)."""
        return self._add({"sleep": seconds})

    def metadata(self, **values: Any) -> Script:
        """Merge ``values`` into the run's metadata."""
        return self._add({"metadata": values})

    def wait_for_input(
        self, stream_id: str, *, timeout: float | None = None, echo_to: str | None = None
    ) -> Script:
        """Wait for the next input on ``stream_id``; with ``echo_to``, append its data there.
        A timeout fails the run, as in a real task."""
        return self._add({"wait_for_input": stream_id, "timeout": timeout, "echo_to": echo_to})

    def hold(self) -> Script:
        """Stay ``EXECUTING`` until the test completes the run (``complete_run``)."""
        return self._add({"hold": True})

    def complete(self, output: Any = None) -> Script:
        """End the run ``COMPLETED_SUCCESSFULLY`` with ``output``."""
        return self._add({"complete": output})

    def fail(self, message: str) -> Script:
        """End the run ``COMPLETED_WITH_ERRORS`` with ``message``."""
        return self._add({"fail": message})
