"""``python manage.py trigger_emulator``: serve the local Trigger.dev realtime emulator."""

from __future__ import annotations

import asyncio
import importlib
import os
import secrets
import sys
from argparse import ArgumentParser, ArgumentTypeError
from typing import Any

from django.core.management.base import BaseCommand, CommandError


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if value <= 0:
        raise ArgumentTypeError(f"must be greater than 0, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 0:
        raise ArgumentTypeError(f"must be 0 or more, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise ArgumentTypeError(f"must be between 0 and 65535, got {value}")
    return value


class Command(BaseCommand):
    help = (
        "Serve a local emulator of the Trigger.dev realtime API (streams, input streams, "
        "triggering, public tokens) for development and tests."
    )
    # It needs neither the database nor the URLconf.
    requires_system_checks: list[str] = []
    requires_migrations_checks = False

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="Interface to bind.")
        parser.add_argument(
            "--port", type=_port, default=8787, help="Port to bind; 0 picks a free one."
        )
        parser.add_argument(
            "--secret-key",
            default=None,
            help="The tr_dev_… secret key clients must send (default: TRIGGER_SECRET_KEY, "
            "else a generated one, printed on stderr).",
        )
        parser.add_argument(
            "--stream-version",
            choices=("v1", "v2"),
            default="v1",
            help="Streams version of runs triggered without "
            "'x-trigger-realtime-streams-version: v2' (the real server defaults to v1).",
        )
        parser.add_argument(
            "--idle-timeout",
            type=_positive_float,
            default=60.0,
            help="Seconds without new parts after which a stream read ends, when the reader "
            "sends no Timeout-Seconds.",
        )
        parser.add_argument(
            "--ping-interval",
            type=_positive_float,
            default=10.0,
            help="Seconds of silence before a keep-alive ping on an open stream read.",
        )
        parser.add_argument(
            "--tokens-per-second",
            type=_non_negative_float,
            default=40.0,
            help="Default speed of the demo-ai-writer task (0 = as fast as possible).",
        )
        parser.add_argument(
            "--tasks-module",
            action="append",
            default=[],
            metavar="MODULE",
            help="Import MODULE first, to register more simulated tasks (repeatable).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        from trigger_django.emulator.server import serve
        from trigger_django.emulator.state import EmulatorConfig

        for module in options["tasks_module"]:
            try:
                importlib.import_module(module)
            except ImportError as error:
                raise CommandError(f"Cannot import tasks module {module!r}: {error}") from error

        secret_key = options["secret_key"] or os.environ.get("TRIGGER_SECRET_KEY")
        if not secret_key:
            secret_key = "tr_dev_" + secrets.token_urlsafe(30)
            # On its own stderr line, so the stdout line stays the only thing to parse.
            sys.stderr.write(f"Generated secret key: {secret_key}\n")
            sys.stderr.flush()
        config = EmulatorConfig(
            secret_key=secret_key,
            stream_version=options["stream_version"],
            idle_timeout=options["idle_timeout"],
            ping_interval=options["ping_interval"],
            tokens_per_second=options["tokens_per_second"],
        )
        try:
            asyncio.run(serve(config, host=options["host"], port=options["port"]))
        except OSError as error:
            raise CommandError(
                f"Cannot listen on {options['host']}:{options['port']}: {error}"
            ) from error
