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

    for conn in [o for o in gc.get_objects() if isinstance(o, AsyncHTTP11Connection)]:
        if conn.is_idle() or conn.is_closed():
            continue
        print(f"--- connection {conn!r}", file=sys.stderr)
        chain = [conn]
        for _ in range(8):
            holders = [
                r
                for r in gc.get_referrers(chain[-1])
                if r is not chain
                and not isinstance(r, type(sys._getframe()))
                and not (isinstance(r, list) and len(r) > 1000)
            ]
            if not holders:
                break
            chain.append(holders[0])
            described = ", ".join(f"{type(h).__qualname__}" for h in holders[:4])
            print(f"    held by: {described} :: {holders[0]!r:.160}", file=sys.stderr)
    print(f"--- end of tasks ({loop!r})", file=sys.stderr, flush=True)


if os.environ.get("BENCH_DUMP_TASKS"):
    import signal

    signal.signal(signal.SIGUSR1, _dump_tasks)
