from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from trigger_django.conf import DEFAULT_API_URL, DEFAULTS, get_config

DOCS = Path(__file__).resolve().parent.parent / "docs" / "settings.md"


def test_defaults_apply_when_setting_is_empty(monkeypatch):
    monkeypatch.delenv("TRIGGER_API_URL", raising=False)
    monkeypatch.delenv("TRIGGER_SECRET_KEY", raising=False)
    with override_settings(TRIGGER_DJANGO={}):
        config = get_config()
    assert config.api_url == DEFAULT_API_URL
    assert config.secret_key is None
    assert config.throttle_ms == 16
    assert config.timeout_seconds == 60


def test_environment_variables_of_the_sdk_are_read(monkeypatch):
    monkeypatch.setenv("TRIGGER_API_URL", "http://127.0.0.1:3030/")
    monkeypatch.setenv("TRIGGER_SECRET_KEY", "tr_dev_from_env")
    with override_settings(TRIGGER_DJANGO={}):
        config = get_config()
    assert config.api_url == "http://127.0.0.1:3030"
    assert config.secret_key == "tr_dev_from_env"


def test_setting_wins_over_environment(monkeypatch):
    monkeypatch.setenv("TRIGGER_SECRET_KEY", "tr_dev_from_env")
    with override_settings(TRIGGER_DJANGO={"SECRET_KEY": "tr_dev_from_setting"}):
        assert get_config().secret_key == "tr_dev_from_setting"


def test_override_settings_resets_the_cache():
    with override_settings(TRIGGER_DJANGO={"THROTTLE_MS": 5}):
        assert get_config().throttle_ms == 5
    assert get_config().throttle_ms == DEFAULTS["THROTTLE_MS"]


def test_unknown_key_is_a_clear_error():
    with (
        override_settings(TRIGGER_DJANGO={"THROTLE_MS": 5}),
        pytest.raises(ImproperlyConfigured, match=r"Unknown TRIGGER_DJANGO key.*THROTLE_MS"),
    ):
        get_config()


def test_every_setting_is_documented_with_its_default():
    rows = dict(re.findall(r"^\| `([A-Z_]+)` \| `?(.*?)`? \|", DOCS.read_text(), re.MULTILINE))
    assert set(rows) == set(DEFAULTS)
    for key, default in DEFAULTS.items():
        expected = "None" if default is None else repr(default).replace("'", '"')
        assert rows[key] == expected, key
