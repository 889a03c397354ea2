"""``python -m trigger_django.emulator``: the emulator without a Django project.

It takes the options of ``manage.py trigger_emulator`` and prints the same one ready line,
``Trigger.dev emulator listening on http://127.0.0.1:<port>``, so it can be started from an
installed package (a user's own test suite, a fresh virtualenv) with no ``manage.py`` around.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from django.core.management.base import CommandError

from trigger_django.management.commands.trigger_emulator import Command


def main(argv: Sequence[str] | None = None) -> int:
    command = Command()
    parser = argparse.ArgumentParser(
        prog="python -m trigger_django.emulator", description=command.help
    )
    command.add_arguments(parser)
    options = parser.parse_args(argv)
    try:
        command.handle(**vars(options))
    except CommandError as error:
        sys.stderr.write(f"Error: {error}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
