"""The example project as users copy it: runs owned by who started them, safe settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

from example_project.models import AiRun

ROOT = Path(__file__).resolve().parent.parent
OWNERSHIP = {"AUTHORIZE": "example_project.permissions.owns_run"}

pytestmark = pytest.mark.django_db


def import_settings(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    return subprocess.run(
        [sys.executable, "-c", "import example_project.settings as s; print(len(s.SECRET_KEY))"],
        env={**clean, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_with_debug_off_and_no_secret_key_the_settings_refuse_to_load():
    result = import_settings(DJANGO_DEBUG="0")
    assert result.returncode != 0
    assert "ImproperlyConfigured: DJANGO_SECRET_KEY is not set and DEBUG is off" in result.stderr


def test_with_debug_off_the_given_secret_key_is_used():
    result = import_settings(DJANGO_DEBUG="0", DJANGO_SECRET_KEY="k" * 60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "60"


def test_with_debug_on_a_development_key_is_allowed():
    assert import_settings(DJANGO_DEBUG="1").returncode == 0


@pytest.fixture
def ownership(trigger_settings, settings):
    settings.TRIGGER_DJANGO = {**settings.TRIGGER_DJANGO, **OWNERSHIP}
    return settings


@pytest.fixture
def ada(django_user_model):
    return django_user_model.objects.create_user("ada", password="pw")


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", password="pw")


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_asking_records_the_run_with_its_owner(ownership, emulator, ada):
    response = logged_in(ada).post("/", {"prompt": "who owns this?"})
    assert response.status_code == 302
    run = AiRun.objects.get()
    assert response["Location"] == f"/runs/{run.run_id}/"
    assert run.owner == ada
    assert run.prompt == "who owns this?"
    upstream = emulator.run(run.run_id)
    assert upstream["payload"] == {"prompt": "who owns this?"}
    assert upstream["tags"] == [f"user_{ada.pk}"]
    # The home page lists the owner's runs, and only theirs.
    assert "who owns this?" in logged_in(ada).get("/").content.decode()


def test_only_the_owner_sees_the_run_page_and_gets_a_token(ownership, emulator, ada, bob):
    run_id, _ = emulator.trigger("echo-parts", {"parts": ["x"]})
    AiRun.objects.create(run_id=run_id, owner=ada)
    assert logged_in(ada).get(f"/runs/{run_id}/").status_code == 200
    assert logged_in(bob).get(f"/runs/{run_id}/").status_code == 404
    assert "who owns" not in logged_in(bob).get("/").content.decode()
    token_url = f"/trigger/runs/{run_id}/token/"
    assert logged_in(ada).post(token_url).status_code == 200
    assert logged_in(bob).post(token_url).status_code == 403


def test_a_run_recorded_nowhere_belongs_to_nobody(ownership, emulator, ada):
    run_id, _ = emulator.trigger("echo-parts", {"parts": ["x"]})
    assert logged_in(ada).get(f"/runs/{run_id}/").status_code == 404


def test_only_the_owner_may_answer_the_run(ownership, emulator, ada, bob):
    run_id, _ = emulator.trigger("demo-ai-writer", {"prompt": "p", "tokens_per_second": 0})
    AiRun.objects.create(run_id=run_id, owner=ada)
    url = f"/trigger/runs/{run_id}/input/approval/"
    refused = logged_in(bob).post(url, {"approved": "true"}, headers={"accept": "application/json"})
    assert refused.status_code == 403
    assert emulator.run(run_id)["inputs"] == []


def test_an_inactive_owner_is_refused(ownership, emulator, ada):
    from example_project.permissions import owns_run

    run_id, _ = emulator.trigger("echo-parts", {"parts": []})
    AiRun.objects.create(run_id=run_id, owner=ada)
    assert owns_run(ada, run_id, "read")
    ada.is_active = False
    assert not owns_run(ada, run_id, "write")


def test_the_login_page_names_the_demo_account_only_in_the_demo(settings):
    settings.EXAMPLE_DEMO_LOGIN = None
    assert "demo / demo" not in Client().get("/login/").content.decode()
    settings.EXAMPLE_DEMO_LOGIN = "demo / demo"
    assert "log in as <strong>demo / demo</strong>" in Client().get("/login/").content.decode()


def test_pages_link_a_favicon_that_is_served(ada):
    page = logged_in(ada).get("/").content.decode()
    assert 'rel="icon" href="/static/example_project/favicon.svg"' in page


def test_the_defined_streams_are_registered_when_the_apps_load():
    # Even a process that serves only WebSockets (never importing the views) knows them.
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from trigger_django import streams; "
            "print(streams.output_stream('ai-output'), streams.input_stream('approval').form)",
        ],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "example_project.settings"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "OutputStream(id='ai-output', type=<class 'str'>) "
        "<class 'trigger_django.forms.ApprovalForm'>"
    )
