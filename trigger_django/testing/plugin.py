"""The ``trigger_django`` pytest plugin (registered through the ``pytest11`` entry point).

Fixtures, all prefixed ``trigger_`` so that they do not collide with a project's own:

``trigger_emulator`` (session)
    a running emulator (:class:`~trigger_django.emulator.testing.EmulatorProcess`), runs on v2
    framing; ini options ``trigger_emulator_secret_key`` and ``trigger_emulator_args`` (e.g.
    ``--tasks-module myproject.fake_tasks``, imported from the rootdir)
``trigger_emulator_settings``
    ``TRIGGER_DJANGO["API_URL"]``/``["SECRET_KEY"]`` and the ``TRIGGER_API_URL``/
    ``TRIGGER_SECRET_KEY`` variables pointed at ``trigger_emulator`` for one test; returns it
``trigger_script_task``
    ``trigger_script_task("my-task", Script(...))``: runs of your task id play the script for
    the rest of the test
``trigger_stream_socket``
    :func:`~trigger_django.testing.open_stream_socket`, with the settings pointed at the
    emulator: ``async with trigger_stream_socket(user) as socket: ...``
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

DEFAULT_SECRET_KEY = "tr_dev_trigger_django_pytest_plugin_key_0123456789"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "trigger_emulator_secret_key",
        "The secret key the trigger_emulator fixture's emulator accepts.",
        default=DEFAULT_SECRET_KEY,
    )
    parser.addini(
        "trigger_emulator_args",
        "More command-line options for the emulator (python -m trigger_django.emulator --help).",
        type="args",
        default=[],
    )


@pytest.fixture(scope="session")
def trigger_emulator(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A Trigger.dev emulator process for the whole session."""
    from trigger_django.emulator.testing import EmulatorProcess

    config = request.config
    with EmulatorProcess(
        secret_key=str(config.getini("trigger_emulator_secret_key")),
        stream_version="v2",
        extra_args=list(config.getini("trigger_emulator_args")),
        cwd=config.rootpath,
    ) as process:
        yield process


@pytest.fixture
def trigger_emulator_settings(trigger_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Point trigger_django (settings and environment) at ``trigger_emulator`` for one test."""
    from django.conf import settings
    from django.test import override_settings

    monkeypatch.setenv("TRIGGER_API_URL", trigger_emulator.url)
    monkeypatch.setenv("TRIGGER_SECRET_KEY", trigger_emulator.secret_key)
    current = dict(getattr(settings, "TRIGGER_DJANGO", {}) or {})
    override = override_settings(
        TRIGGER_DJANGO={
            **current,
            "API_URL": trigger_emulator.url,
            "SECRET_KEY": trigger_emulator.secret_key,
        }
    )
    override.enable()
    try:
        yield trigger_emulator
    finally:
        override.disable()


@pytest.fixture
def trigger_script_task(trigger_emulator: Any) -> Iterator[Callable[[str, Any], None]]:
    """``trigger_script_task(task_id, script)``: script a task id for the rest of the test."""
    scripted: list[str] = []

    def script(task_id: str, steps: Any) -> None:
        trigger_emulator.script_task(task_id, steps)
        scripted.append(task_id)

    yield script
    for task_id in scripted:
        trigger_emulator.unscript_task(task_id)


@pytest.fixture
def trigger_stream_socket(trigger_emulator_settings: Any) -> Callable[..., Any]:
    """``async with trigger_stream_socket(user) as socket:`` (see ``open_stream_socket``)."""
    from trigger_django.testing.sockets import open_stream_socket

    return open_stream_socket


__all__ = [
    "DEFAULT_SECRET_KEY",
    "trigger_emulator",
    "trigger_emulator_settings",
    "trigger_script_task",
    "trigger_stream_socket",
]
