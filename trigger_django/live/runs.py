"""Runs on the live path: one upstream run subscription per run and process.

A :class:`RunWatch` follows one run's state (``TriggerClient.subscribe_run``, the Electric shape)
for everything in the process that needs it, and stops shortly after the last user leaves:

* :class:`RunFeed`, the hub source behind ``{% run_status %}`` and ``{% run_viewer %}``: every
  state of the run, as one part each (the page applies the newest);
* :class:`FollowedOutputStream`, the source behind every ``{% stream_viewer %}``: an output
  stream that follows its run. While the run is executing or waiting, an idle upstream read is
  reopened from its cursor instead of ending the viewer; once the run has finished, what is
  left is drained (``DRAIN_SECONDS``) and the viewer completes, or ends with the run's error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Hashable
from typing import Any

from trigger_django.client import APIStatusError, Run, TriggerError
from trigger_django.live.hub import Item, Source
from trigger_django.live.protocol import encode_part, upstream_error
from trigger_django.live.sources import token_for
from trigger_django.runs import FINISHED_STATUSES, progress_from_metadata, status_view
from trigger_django.upstream import get_client

__all__ = [
    "DRAIN_SECONDS",
    "FollowedOutputStream",
    "RunEnded",
    "RunFeed",
    "RunWatch",
    "run_state",
    "watch_run",
]

logger = logging.getLogger(__name__)

#: Once a run has finished, its streams are read for this long more (``Timeout-Seconds``) to
#: pick up the parts written just before the end; then their viewers complete.
DRAIN_SECONDS = 1
#: Seconds a run watch outlives its last user (a page reloading rides the same subscription).
WATCH_LINGER_SECONDS = 2.0
#: Seconds between attempts to follow a run after its subscription failed (not terminally).
RETRY_SECONDS = 2.0

#: Statuses of a run that did not succeed: its viewers end with an error naming the status.
_UNSUCCESSFUL = FINISHED_STATUSES - {"COMPLETED"}


class RunEnded(TriggerError):
    """A stream's run finished without success; its viewers show this in words."""

    def __init__(self, run: Run) -> None:
        view = status_view(run.status)
        detail = f": {run.error.message}" if run.error is not None and run.error.message else ""
        super().__init__(f"The run {run.id} ended: {view.label.lower()}{detail}.")
        self.run = run


class RunWatch:
    """The state of one run, followed upstream once for the whole process."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.run: Run | None = None
        #: Bumped for every new state (and when the watch ends), so waiters wake up.
        self.version = 0
        #: The terminal failure of the subscription, as ``(status, message)``.
        self.failure: tuple[int, str] | None = None
        self.users = 0
        self._changed = asyncio.Event()
        self._linger: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def finished(self) -> bool:
        """True once the run has finished (``finished_at`` set, or a finished status)."""
        run = self.run
        return run is not None and (run.finished_at is not None or run.status in FINISHED_STATUSES)

    @property
    def ended(self) -> bool:
        """True once nothing more will come: the run finished, or following it failed."""
        return self.finished or self.failure is not None

    def acquire(self) -> RunWatch:
        self.users += 1
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if self._task is None or (self._task.done() and not self.ended):
            self._task = asyncio.get_running_loop().create_task(
                self._follow(), name=f"trigger_django:run:{self.run_id}"
            )
        return self

    def release(self) -> None:
        self.users -= 1
        if self.users <= 0 and self._linger is None:
            self._linger = asyncio.get_running_loop().call_later(WATCH_LINGER_SECONDS, self._stop)

    def _stop(self) -> None:
        self._linger = None
        if self.users > 0:
            return
        if _watches.get(self.run_id) is self:
            del _watches[self.run_id]
        if self._task is not None:
            self._task.cancel()

    async def changed(self, version: int) -> int:
        """Wait until the state is newer than ``version`` (or the watch ended); the new one."""
        while self.version <= version and not self.ended:
            self._changed.clear()
            await self._changed.wait()
        return self.version

    async def wait_finished(self) -> None:
        version = self.version
        while not self.ended:
            version = await self.changed(version)

    def _bump(self) -> None:
        self.version += 1
        self._changed.set()

    async def _follow(self) -> None:
        fresh = False
        while not self.ended:
            try:
                token = await token_for(self.run_id, fresh=fresh)
                client = get_client(access_token=token, run_id=self.run_id)
                async with client.subscribe_run(self.run_id) as runs:
                    async for run in runs:
                        self.run = run
                        self._bump()
                if not self.ended:  # the subscription ended without a finished run
                    await asyncio.sleep(RETRY_SECONDS)
            except asyncio.CancelledError:
                raise
            except APIStatusError as exc:
                if exc.status in (401, 403) and not fresh:
                    fresh = True  # the token expired while the run went on: mint a new one
                    continue
                self.failure = upstream_error(exc, self.run_id, "")
                logger.info("trigger_django: cannot follow run %s: %s", self.run_id, exc)
            except Exception as exc:
                self.failure = upstream_error(exc, self.run_id, "")
                logger.warning("trigger_django: cannot follow run %s: %s", self.run_id, exc)
            else:
                fresh = False
        self._bump()


_watches: dict[str, RunWatch] = {}


def watch_run(run_id: str) -> RunWatch:
    """The process's watch of ``run_id``, acquired: call ``release()`` when done with it."""
    watch = _watches.get(run_id)
    if watch is None:
        watch = _watches[run_id] = RunWatch(run_id)
    return watch.acquire()


def run_state(run: Run) -> dict[str, Any]:
    """What a page learns of a run (``{% run_status %}`` / ``{% run_viewer %}``): no payload or
    output, which may hold anything; the metadata, which the task chose to publish."""
    view = status_view(run.status)
    progress = progress_from_metadata(run.metadata)
    return {
        "id": run.id,
        "status": run.status,
        "label": view.label,
        "tone": view.tone,
        "finished": view.finished or run.finished_at is not None,
        "progress": None
        if progress is None
        else {"value": progress.value, "percent": progress.percent, "step": progress.step},
        "metadata": run.metadata,
        "streams": list(run.stream_keys()),
        "tags": list(run.tags),
        "error": None if run.error is None else run.error.message,
        "updated_at": run.updated_at.isoformat(),
    }


class _Clock:
    """Positions for run states: microseconds since the epoch, strictly increasing, so a page
    that reconnects to another process still sees newer states as newer."""

    last = 0

    @classmethod
    def next(cls) -> int:
        cls.last = max(cls.last + 1, time.time_ns() // 1000)
        return cls.last


class RunFeed:
    """A run's states as a hub source: each state one part, ``{"chunk": run_state(run)}``."""

    __slots__ = ("_key", "run_id")

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._key: tuple[Hashable, ...] = ("run", run_id)

    @property
    def key(self) -> tuple[Hashable, ...]:
        return self._key

    def idle_end_allowed(self) -> bool:
        # A run viewer ends with its run, however long the run waits.
        return False

    def describe_error(self, exc: BaseException) -> tuple[int, str]:
        status, message = upstream_error(exc, self.run_id, "")
        return status, message.replace("stream '' of run", "run")

    async def open(self, resume: str | None, idle_timeout: int) -> AsyncIterator[Item]:
        watch = watch_run(self.run_id)
        try:
            version = 0
            while True:
                version = await watch.changed(version)
                if watch.run is not None:
                    position = _Clock.next()
                    cursor = str(position)
                    data = encode_part(cursor, run_state(watch.run), position // 1000, 0)
                    yield Item((position, 0), cursor, data, len(data), cursor)
                if watch.ended:
                    if watch.failure is not None and watch.run is None:
                        raise _WatchFailed(*watch.failure)
                    return
        finally:
            watch.release()


class _WatchFailed(TriggerError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class FollowedOutputStream:
    """An output stream that ends with its run, not with an idle timeout (see the module).

    Wraps the source that reads the stream (``OutputStream``, or the fan-out's relay)."""

    __slots__ = ("base", "run_id", "stream_key")

    def __init__(self, base: Source, run_id: str, stream_key: str) -> None:
        self.base = base
        self.run_id = run_id
        self.stream_key = stream_key

    @property
    def key(self) -> tuple[Hashable, ...]:
        return self.base.key

    def idle_end_allowed(self) -> bool:
        watch = _watches.get(self.run_id)
        # Without a known state (or when following the run failed), as before: idle ends it.
        return watch is None or watch.run is None or watch.ended

    def describe_error(self, exc: BaseException) -> tuple[int, str]:
        if isinstance(exc, RunEnded):
            return 409, str(exc)
        return self.base.describe_error(exc)

    async def open(self, resume: str | None, idle_timeout: int) -> AsyncIterator[Item]:
        watch = watch_run(self.run_id)
        try:
            while True:
                finished = watch.finished
                following = not finished and watch.failure is None
                reads = self.base.open(resume, DRAIN_SECONDS if finished else idle_timeout)
                drained = _drained(reads, watch if following else None)
                async with contextlib.aclosing(reads), contextlib.aclosing(drained):  # type: ignore[type-var]
                    async for item in drained:
                        resume = item.resume
                        yield item
                if watch.finished:
                    # Drained: what the run wrote before its end has been read.
                    run = watch.run
                    if run is not None and run.status in _UNSUCCESSFUL:
                        raise RunEnded(run)
                    return
                if not following or watch.run is None:
                    return  # nothing known of the run: an idle end, as without following
                # Idle while the run still runs: read on from the cursor.
        finally:
            watch.release()


async def _drained(items: AsyncIterator[Item], watch: RunWatch | None) -> AsyncIterator[Item]:
    """``items`` until they end, or, once ``watch``'s run has finished, until none has come
    for ``DRAIN_SECONDS`` (the same read drains: no second request).

    The read is awaited in place, under a deadline that is open while the run goes on and set
    to ``DRAIN_SECONDS`` ahead when it finishes: no task or wait per part."""
    if watch is None:
        async for item in items:
            yield item
        return
    loop = asyncio.get_running_loop()
    reading: asyncio.Timeout | None = None

    def run_finished(_: object) -> None:
        if reading is not None:  # waiting on the read now: it has DRAIN_SECONDS left
            reading.reschedule(loop.time() + DRAIN_SECONDS)

    finished = asyncio.ensure_future(watch.wait_finished())
    finished.add_done_callback(run_finished)
    try:
        while True:
            deadline = None if not finished.done() else loop.time() + DRAIN_SECONDS
            read_deadline = reading = asyncio.timeout_at(deadline)
            try:
                async with read_deadline:
                    item = await anext(items)
            except StopAsyncIteration:
                return
            except TimeoutError:
                if read_deadline.expired():
                    return  # drained; the read was cancelled, which ends its request
                raise
            finally:
                reading = None
            yield item
    finally:
        finished.remove_done_callback(run_finished)
        finished.cancel()
