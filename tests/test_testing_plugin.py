"""The trigger_django pytest plugin (trigger_django.testing), used as a project would use it.

The fixtures come from the ``pytest11`` entry point, not from tests/conftest.py."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from example_project.models import AiRun
from trigger_django.emulator.testing import EmulatorError, EmulatorProcess
from trigger_django.tasks import trigger
from trigger_django.testing import Script, SubscriptionRefused

OWNERSHIP = {"AUTHORIZE": "example_project.permissions.owns_run"}


def test_the_plugin_is_registered_through_its_entry_point(pytestconfig):
    plugin = pytestconfig.pluginmanager.get_plugin("trigger_django")
    assert plugin is not None
    assert plugin.__name__ == "trigger_django.testing.plugin"


def test_the_emulator_runs_from_the_package_not_from_a_checkout(trigger_emulator, tmp_path):
    # `python -m trigger_django.emulator` from a directory with no manage.py in sight.
    with EmulatorProcess(cwd=tmp_path) as process:
        run_id, _ = process.trigger("echo-parts", {"parts": [1]})
        assert process.wait_for_status(run_id, "COMPLETED_SUCCESSFULLY")["streams"] == {
            "default": 1
        }


def test_python_m_trigger_django_emulator_takes_the_command_options():
    result = subprocess.run(
        [sys.executable, "-m", "trigger_django.emulator", "--idle-timeout", "-3"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "--idle-timeout: must be greater than 0" in result.stderr


def test_emulator_settings_point_settings_and_environment_at_it(trigger_emulator_settings):
    import os

    from trigger_django.conf import get_config

    assert get_config().api_url == trigger_emulator_settings.url
    assert get_config().secret_key == trigger_emulator_settings.secret_key
    assert os.environ["TRIGGER_API_URL"] == trigger_emulator_settings.url


def test_a_scripted_task_plays_parts_metadata_and_its_end(
    trigger_emulator_settings, trigger_script_task
):
    emulator = trigger_emulator_settings
    trigger_script_task(
        "summarise", Script(key="out").write("a", {"b": 1}).metadata(stage="done").complete("ok")
    )
    handle = trigger("summarise", {"text": "..."})
    run = emulator.wait_for_status(handle.id, "COMPLETED_SUCCESSFULLY")
    assert run["streams"] == {"out": 2}
    assert run["metadata"] == {"stage": "done"}
    assert run["output"] == "ok"


def test_a_script_can_fail_the_run(trigger_emulator_settings, trigger_script_task):
    trigger_script_task("fails", Script().write("partial").fail("model overloaded"))
    handle = trigger("fails", {})
    run = trigger_emulator_settings.wait_for_status(handle.id, "COMPLETED_WITH_ERRORS")
    assert run["error"]["message"] == "model overloaded"


def test_a_held_run_changes_status_when_the_test_says(trigger_emulator_settings):
    emulator = trigger_emulator_settings
    run_id, _ = emulator.trigger_script(Script().write("x").hold())
    assert emulator.wait_for(lambda: emulator.run(run_id)["streams"] == {"default": 1})
    assert emulator.run(run_id)["status"] == "EXECUTING"
    emulator.complete_run(run_id, {"done": True})
    assert emulator.run(run_id)["output"] == {"done": True}


def test_a_script_overrides_a_built_in_task_only_while_the_fixture_lives(
    trigger_emulator, trigger_script_task
):
    trigger_script_task("echo-parts", Script().write("scripted"))
    run_id, _ = trigger_emulator.trigger("echo-parts", {"parts": [1, 2, 3]})
    assert trigger_emulator.wait_for_status(run_id, "COMPLETED_SUCCESSFULLY")["streams"] == {
        "default": 1
    }


def test_after_the_fixture_the_built_in_task_is_back(trigger_emulator):
    run_id, _ = trigger_emulator.trigger("echo-parts", {"parts": [1, 2, 3]})
    assert trigger_emulator.wait_for_status(run_id, "COMPLETED_SUCCESSFULLY")["streams"] == {
        "default": 3
    }


def test_a_bad_script_is_refused_in_the_test_with_the_step_named(trigger_emulator):
    with pytest.raises(ValueError, match="Script step 1"):
        trigger_emulator.script_task("bad", [{"write": 1}, {"sleep": -1}])
    with pytest.raises(ValueError, match="exactly one of"):
        trigger_emulator.trigger_script([{"bogus": True}])


def test_the_script_file_is_the_only_state_and_is_json(trigger_emulator, trigger_script_task):
    from pathlib import Path

    from trigger_django.testing.scripted import script_path

    trigger_script_task("with/slash and spaces", Script().write("ok"))
    directory = Path(trigger_emulator._path("scripts"))
    document = json.loads(script_path(directory, "with/slash and spaces").read_text())
    assert document == {"steps": [{"write": "ok", "key": "default"}]}


# -- the socket helper ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_a_users_own_view_triggers_and_its_stream_reads_back(
    trigger_emulator_settings, trigger_script_task, trigger_stream_socket, async_client, settings
):
    """What docs/testing.md shows, on the example project's home view."""
    from django.contrib.auth.models import User

    settings.TRIGGER_DJANGO = {**settings.TRIGGER_DJANGO, **OWNERSHIP}
    trigger_script_task(
        "demo-ai-writer", Script(key="ai-output").write("Hello", ", ").sleep(0.05).write("world")
    )
    ada = await User.objects.acreate(username="ada")
    await async_client.aforce_login(ada)
    response = await async_client.post("/", {"prompt": "greet me"})
    assert response.status_code == 302
    run = await AiRun.objects.aget(owner=ada)
    assert response["Location"] == f"/runs/{run.run_id}/"
    async with trigger_stream_socket(ada) as socket:
        read = await socket.read(await socket.subscribe(run.run_id, "ai-output"))
    assert read.text == "Hello, world"
    assert read.end["type"] == "complete"


@pytest.mark.django_db(transaction=True)
async def test_another_user_is_refused_by_the_ownership_hook(
    trigger_emulator_settings, trigger_stream_socket, settings
):
    from django.contrib.auth.models import User

    settings.TRIGGER_DJANGO = {**settings.TRIGGER_DJANGO, **OWNERSHIP}
    emulator = trigger_emulator_settings
    run_id, _ = await asyncio.to_thread(emulator.trigger_script, Script().write("secret"))
    owner = await User.objects.acreate(username="owner")
    other = await User.objects.acreate(username="other")
    await AiRun.objects.acreate(run_id=run_id, owner=owner)
    emulator.clear_requests()
    async with trigger_stream_socket(other) as socket:
        # A refusal is a close (4403) today, an in-band error once refusals are per viewer.
        with pytest.raises(SubscriptionRefused) as refused:
            await socket.subscribe(run_id, "default")
    assert refused.value.code == 4403 or refused.value.status == 403
    assert [r for r in emulator.requests() if run_id in r["path"]] == []
    async with trigger_stream_socket(owner) as socket:
        assert (await socket.read(await socket.subscribe(run_id))).chunks == ["secret"]


@pytest.mark.django_db(transaction=True)
async def test_faults_on_a_scripted_run_lose_and_repeat_nothing(
    trigger_emulator_settings, trigger_stream_socket, django_user_model
):
    emulator = trigger_emulator_settings
    parts = [f"p{n} " for n in range(30)]
    script = Script()
    for part in parts:
        script.write(part).sleep(0.005)
    run_id, _ = await asyncio.to_thread(emulator.trigger_script, script)
    await asyncio.to_thread(emulator.inject_fault, run_id, "default", "drop", after=7)
    await asyncio.to_thread(emulator.inject_fault, run_id, "default", "status", status=503)
    user = await django_user_model.objects.acreate(username="faulty")
    async with trigger_stream_socket(user) as socket:
        read = await socket.read(await socket.subscribe(run_id), limit=60)
    assert read.chunks == parts
    reads = [r for r in emulator.requests() if r["path"].endswith(f"{run_id}/default")]
    assert len(reads) >= 3  # the first, the dropped one's resume, past the 503


async def test_an_anonymous_socket_is_refused(trigger_stream_socket, db):
    with pytest.raises(SubscriptionRefused):
        async with trigger_stream_socket(None) as socket:
            await socket.subscribe("run_abc")


def test_script_task_needs_a_running_emulator():
    with pytest.raises(EmulatorError, match="not started"):
        EmulatorProcess().script_task("x", Script())


def test_stream_read_text_joins_strings_and_json(trigger_emulator):
    from trigger_django.testing import StreamRead

    assert StreamRead(chunks=["a", 1, {"b": None}]).text == 'a1{"b": null}'
