"""``python -m trigger_django.emulator``: the ``trigger_emulator`` command without a project.

Takes the same options as ``manage.py trigger_emulator`` (see docs/emulator.md). The emulator
needs no database or URLconf, so when no ``DJANGO_SETTINGS_MODULE`` is set it runs on empty
settings; with one set, ``--tasks-module`` may import the project's code.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> None:
    import django
    from django.conf import settings

    if not settings.configured and not os.environ.get("DJANGO_SETTINGS_MODULE"):
        settings.configure()
    django.setup()

    from trigger_django.management.commands.trigger_emulator import Command

    args = sys.argv[1:] if argv is None else argv
    Command().run_from_argv(["python -m trigger_django.emulator", "trigger_emulator", *args])


if __name__ == "__main__":
    main()
