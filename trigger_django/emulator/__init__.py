"""A local emulator of the Trigger.dev realtime API (streams, input streams, triggering, tokens).

Run it with ``python manage.py trigger_emulator``; see docs/emulator.md.
"""

from __future__ import annotations

from trigger_django.emulator.app import EmulatorApp
from trigger_django.emulator.state import EmulatorConfig, EmulatorState
from trigger_django.emulator.tasks import (
    InputTimeoutError,
    RunContext,
    demo_answer_text,
    demo_answer_tokens,
    demo_weather_parts,
    demo_weather_temperature,
    register_task,
)

__all__ = [
    "EmulatorApp",
    "EmulatorConfig",
    "EmulatorState",
    "InputTimeoutError",
    "RunContext",
    "demo_answer_text",
    "demo_answer_tokens",
    "demo_weather_parts",
    "demo_weather_temperature",
    "register_task",
]
