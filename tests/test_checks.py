from __future__ import annotations

import pytest
from django.core.checks import run_checks
from django.test import override_settings

from tests.settings import INSTALLED_APPS


def check_ids() -> set[str]:
    return {message.id for message in run_checks() if message.id.startswith("trigger_django.")}


@pytest.fixture
def configured_settings(settings):
    settings.DEBUG = True
    return settings


def test_the_example_project_passes_every_check(configured_settings):
    assert check_ids() == set()


def test_asgi_application_missing(configured_settings):
    del configured_settings.ASGI_APPLICATION
    assert "trigger_django.E001" in check_ids()


def test_channels_missing(configured_settings):
    configured_settings.INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "channels"]
    assert "trigger_django.E002" in check_ids()


def test_daphne_missing(configured_settings):
    configured_settings.INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "daphne"]
    assert "trigger_django.W003" in check_ids()


def test_secret_key_missing(configured_settings, monkeypatch):
    monkeypatch.delenv("TRIGGER_SECRET_KEY", raising=False)
    configured_settings.TRIGGER_DJANGO = {}
    assert "trigger_django.W004" in check_ids()


def test_in_memory_layer_in_production(configured_settings):
    configured_settings.DEBUG = False
    assert "trigger_django.W005" in check_ids()


def test_unimportable_permission_hook(configured_settings):
    configured_settings.TRIGGER_DJANGO = {
        **configured_settings.TRIGGER_DJANGO,
        "AUTHORIZE": "nowhere.can_read",
    }
    assert "trigger_django.E007" in check_ids()


def test_api_url_without_http_scheme(configured_settings):
    configured_settings.TRIGGER_DJANGO = {
        **configured_settings.TRIGGER_DJANGO,
        "API_URL": "api.trigger.dev",
    }
    assert "trigger_django.E008" in check_ids()


def test_unknown_setting_key_is_reported_not_raised(configured_settings):
    configured_settings.TRIGGER_DJANGO = {"SECRET": "x"}
    messages = [m for m in run_checks() if m.id == "trigger_django.E009"]
    assert len(messages) == 1
    assert "SECRET" in messages[0].msg


@override_settings(ASGI_APPLICATION="tests.unguarded_asgi.application")
def test_websocket_without_origin_validator(configured_settings):
    assert "trigger_django.W006" in check_ids()


def test_default_permission_hook_in_production(configured_settings):
    configured_settings.DEBUG = False
    assert "trigger_django.W007" in check_ids()
    configured_settings.TRIGGER_DJANGO = {
        **configured_settings.TRIGGER_DJANGO,
        "AUTHORIZE": "tests.test_checks.owner_only",
    }
    assert "trigger_django.W007" not in check_ids()


def owner_only(user, run_id, action):
    return False
