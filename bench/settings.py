"""Settings of daphne under the bench and the soak: the example project, quieter, with
``TRIGGER_DJANGO`` taken from the JSON in ``$BENCH_TRIGGER_DJANGO`` (e.g. ``{"FANOUT": …}``)."""

from __future__ import annotations

import json
import os

from example_project.settings import *  # noqa: F403

DEBUG = False
TRIGGER_DJANGO = json.loads(os.environ.get("BENCH_TRIGGER_DJANGO") or "{}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "trigger_django": {"handlers": ["console"], "level": "WARNING"},
        # daphne sets the root logger to INFO: httpx would log every upstream request.
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
    },
}


def _dump_tasks(signum: int, frame: object) -> None:
    """SIGUSR1: print every asyncio task of this process with its stack to stderr (the log),
    so a bench or the soak can show what daphne is doing when something is left over."""
    import asyncio
    import gc
    import sys

    # daphne's loop (Twisted's asyncio reactor runs it): the one that is running.
    loops = [o for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop)]
    loop = next((o for o in loops if o.is_running()), None)
    for task in asyncio.all_tasks(loop) if loop is not None else ():
        print(f"--- task {task.get_name()} {task!r:.200}", file=sys.stderr)
        task.print_stack(limit=12, file=sys.stderr)
    # Upstream connections that are not idle, and what holds them (a leak's owner).
    from httpcore._async.http11 import AsyncHTTP11Connection

    busy = [
        o
        for o in gc.get_objects()
        if isinstance(o, AsyncHTTP11Connection) and not (o.is_idle() or o.is_closed())
    ]
    for conn in busy:
        print(f"--- connection {conn!r}", file=sys.stderr)
        for line in _holders(conn, ignore=busy):
            print(f"    {line}", file=sys.stderr)
    print(f"--- end of tasks ({loop!r})", file=sys.stderr, flush=True)


if os.environ.get("BENCH_DUMP_TASKS"):
    import signal

    signal.signal(signal.SIGUSR1, _dump_tasks)


def _holders(target: object, ignore: object, depth: int = 14) -> list[str]:
    """Who holds ``target``, level by level: the objects that refer to it, up to the first
    coroutine or generator outside httpx/httpcore (printed with its line: the owner), a task,
    or shared infrastructure (the pool, the client), which holds every connection."""
    import asyncio
    import gc
    import sys
    import types

    mine = sys._getframe()
    seen = {id(target), id(mine), id(ignore)}
    shared = ("AsyncConnectionPool", "AsyncHTTPTransport", "AsyncClient", "TriggerClient")
    lines: list[str] = []
    level = [target]
    for step in range(depth):
        upper = []
        for obj in level:
            for ref in gc.get_referrers(obj):
                if id(ref) in seen or ref is level or ref is upper or ref is lines:
                    continue
                if isinstance(ref, (types.FrameType, types.ModuleType, types.FunctionType, type)):
                    continue
                if isinstance(ref, (list, dict)) and len(ref) > 1000:
                    continue
                seen.add(id(ref))
                indent = "  " * step
                code = getattr(ref, "ag_code", None) or getattr(ref, "cr_code", None)
                if code is not None:
                    frame = getattr(ref, "ag_frame", None) or getattr(ref, "cr_frame", None)
                    where = f"{code.co_filename}:{frame.f_lineno if frame else 'done'}"
                    lines.append(f"{indent}{type(ref).__name__} {code.co_qualname} {where}")
                    if "/httpx/" in code.co_filename or "/httpcore/" in code.co_filename:
                        upper.append(ref)
                    continue
                lines.append(f"{indent}{type(ref).__qualname__} {ref!r:.120}")
                if type(ref).__name__ not in shared and not isinstance(ref, asyncio.Task):
                    upper.append(ref)
        level = upper
        if not level or len(lines) > 60:
            break
    return lines
