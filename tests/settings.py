"""Test settings: the example project with a fixed upstream secret (>= 32 bytes for PyJWT)."""

from __future__ import annotations

from example_project.settings import *  # noqa: F403

TEST_TRIGGER_SECRET_KEY = "tr_dev_test_secret_key_0123456789abcdefghij"
TRIGGER_DJANGO = {"API_URL": "http://127.0.0.1:9", "SECRET_KEY": TEST_TRIGGER_SECRET_KEY}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
