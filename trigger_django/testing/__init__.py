"""Test helpers for projects using trigger_django, also a pytest plugin (``pytest11`` entry
point ``trigger_django``: the fixtures are in :mod:`trigger_django.testing.plugin`).

See docs/testing.md. Everything works from the installed package: the emulator runs as
``python -m trigger_django.emulator``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trigger_django.emulator.testing import EmulatorError, EmulatorProcess
    from trigger_django.testing.script import Script
    from trigger_django.testing.sockets import (
        StreamRead,
        StreamSocket,
        SubscriptionRefused,
        open_stream_socket,
    )

__all__ = [
    "EmulatorError",
    "EmulatorProcess",
    "Script",
    "StreamRead",
    "StreamSocket",
    "SubscriptionRefused",
    "open_stream_socket",
]

# Imported on first use: the emulator process imports trigger_django.testing.scripted, and must
# not pull in Channels or the auth models on the way.
_LAZY = {
    "EmulatorError": "trigger_django.emulator.testing",
    "EmulatorProcess": "trigger_django.emulator.testing",
    "Script": "trigger_django.testing.script",
    "StreamRead": "trigger_django.testing.sockets",
    "StreamSocket": "trigger_django.testing.sockets",
    "SubscriptionRefused": "trigger_django.testing.sockets",
    "open_stream_socket": "trigger_django.testing.sockets",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trigger_django.testing' has no attribute {name!r}")
