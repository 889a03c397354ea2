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


REDIS_URL = "redis://127.0.0.1:6390/0"


def redis_layer(*hosts):
    return {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": list(hosts)},
        }
    }


def redis_py_major() -> int:
    from importlib import metadata

    return int(metadata.version("redis").split(".")[0])


@pytest.mark.skipif(redis_py_major() < 8, reason="redis-py < 8 has no read timeout by default")
@pytest.mark.parametrize(
    "host",
    [
        REDIS_URL,
        {"address": REDIS_URL},
        {"address": REDIS_URL, "socket_timeout": 5},
        {"address": REDIS_URL + "?socket_timeout=5", "socket_timeout": None},
        ("127.0.0.1", 6390),
    ],
)
def test_redis_layer_with_redis_py_8s_read_timeout(configured_settings, host):
    configured_settings.CHANNEL_LAYERS = redis_layer(host)
    messages = [m for m in run_checks() if m.id == "trigger_django.W008"]
    assert len(messages) == 1
    assert "socket_timeout of 5 s" in messages[0].msg
    assert "'socket_timeout': None" in messages[0].hint


def test_redis_layer_with_a_password_does_not_show_it(configured_settings):
    if redis_py_major() < 8:
        pytest.skip("redis-py < 8 has no read timeout by default")
    configured_settings.CHANNEL_LAYERS = redis_layer("redis://:hunter2-secret@127.0.0.1:6390/0")
    (message,) = [m for m in run_checks() if m.id == "trigger_django.W008"]
    assert "hunter2-secret" not in message.msg


@pytest.mark.parametrize(
    "layers",
    [
        redis_layer({"address": REDIS_URL, "socket_timeout": None}),  # the documented config
        redis_layer({"address": REDIS_URL, "socket_timeout": 30}),
        {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
        {
            "default": {
                "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
                "CONFIG": {"hosts": [REDIS_URL]},
            }
        },
    ],
)
def test_working_layers_pass_the_redis_timeout_check(configured_settings, layers):
    configured_settings.CHANNEL_LAYERS = layers
    assert "trigger_django.W008" not in check_ids()


def test_the_example_projects_redis_layer_passes_the_check(configured_settings, monkeypatch):
    import importlib

    import example_project.settings as example

    monkeypatch.setenv("REDIS_URL", REDIS_URL)
    try:
        layers = importlib.reload(example).CHANNEL_LAYERS
    finally:
        monkeypatch.delenv("REDIS_URL")
        importlib.reload(example)
    assert layers["default"]["BACKEND"] == "channels_redis.core.RedisChannelLayer"
    configured_settings.CHANNEL_LAYERS = layers
    assert "trigger_django.W008" not in check_ids()


def test_the_docs_show_the_redis_layer_config_the_check_accepts(configured_settings):
    from pathlib import Path

    docs = Path(__file__).resolve().parents[1] / "docs"
    shown = '{"address": REDIS_URL, "socket_timeout": None}'
    for page in ("installation.md", "deployment.md"):
        assert shown in (docs / page).read_text(), f"docs/{page} does not show {shown}"
    configured_settings.CHANNEL_LAYERS = redis_layer({"address": REDIS_URL, "socket_timeout": None})
    assert "trigger_django.W008" not in check_ids()


def test_fanout_off_and_on_with_redis_pass(configured_settings):
    configured_settings.TRIGGER_DJANGO = {
        **configured_settings.TRIGGER_DJANGO,
        "FANOUT": {"REDIS_URL": "redis://127.0.0.1:6379/0"},
    }
    assert check_ids() == set()


@pytest.mark.parametrize(
    ("fanout", "says"),
    [
        ("redis://127.0.0.1:6379/0", "must be None (off) or a dict"),
        ({"REDIS_URL": "http://127.0.0.1:6379"}, "must be a Redis URL"),
        ({}, "must be a Redis URL"),
        ({"REDIS_URL": "redis://x", "LEASE": 5}, "Unknown TRIGGER_DJANGO['FANOUT'] key(s): LEASE"),
        ({"REDIS_URL": "redis://x", "LEASE_SECONDS": 0}, "'LEASE_SECONDS'] must be a number"),
        ({"REDIS_URL": "redis://x", "MAXLEN": 10.5}, "'MAXLEN'] must be a number"),
        ({"REDIS_URL": "redis://x", "KEY_PREFIX": "a{b}"}, "without braces"),
    ],
)
def test_a_bad_fanout_value_is_e009_saying_what_is_wrong(configured_settings, fanout, says):
    configured_settings.TRIGGER_DJANGO = {**configured_settings.TRIGGER_DJANGO, "FANOUT": fanout}
    (message,) = [m for m in run_checks() if m.id == "trigger_django.E009"]
    assert says in message.msg


def test_fanout_without_redis_py_is_e010(configured_settings, monkeypatch):
    import sys

    configured_settings.TRIGGER_DJANGO = {
        **configured_settings.TRIGGER_DJANGO,
        "FANOUT": {"REDIS_URL": "redis://127.0.0.1:6379/0"},
    }
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)  # import fails, as when missing
    assert "trigger_django.E010" in check_ids()


def test_a_lease_as_long_as_the_viewer_timeout_is_w009(configured_settings):
    configured_settings.TRIGGER_DJANGO = {
        **configured_settings.TRIGGER_DJANGO,
        "TIMEOUT_SECONDS": 5,
        "FANOUT": {"REDIS_URL": "redis://127.0.0.1:6379/0", "LEASE_SECONDS": 5},
    }
    assert "trigger_django.W009" in check_ids()
