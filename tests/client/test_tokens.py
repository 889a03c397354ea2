"""Public token signing, verification and scope matching, checked against the official SDK."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest

from trigger_django.client import (
    InvalidTokenError,
    flatten_scopes,
    scope_allows,
    sign_public_token,
    verify_public_token,
)
from trigger_django.client._tokens import parse_timespan

from .conftest import SECRET

CONFORMANCE_DIR = Path(__file__).resolve().parents[1] / "conformance"


def segments(token: str) -> tuple[dict, dict]:
    def part(text: str) -> dict:
        return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))

    header, payload, _ = token.split(".")
    return part(header), part(payload)


def run_sdk(script: str, *args: str) -> dict:
    """Run an ES module snippet with the official @trigger.dev/core installed for conformance."""
    assert (CONFORMANCE_DIR / "node_modules" / "@trigger.dev" / "core").is_dir(), (
        "tests/conformance/node_modules is missing: run `make node-deps` (make test does)"
    )
    result = subprocess.run(
        ["node", "--input-type=module", "-e", script, *args],
        cwd=CONFORMANCE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout)


SDK_SIGN = """
import { generateJWT, validateJWT } from "@trigger.dev/core/v3";
const [secret, ours] = process.argv.slice(1);
const token = await generateJWT({
  secretKey: secret,
  payload: { sub: "env_1", pub: true, scopes: ["read:runs:run_1", "write:inputStreams:run_1"],
             realtime: { skipColumns: ["payload"] } },
  expirationTime: "15m",
});
const check = await validateJWT(ours, secret);
console.log(JSON.stringify({ token, ours_ok: check.ok, ours_payload: check.payload ?? null }));
"""


def test_tokens_match_the_sdk():
    ours = sign_public_token(
        SECRET,
        sub="env_1",
        scopes={"read": {"runs": ["run_1"]}, "write": {"inputStreams": ["run_1"]}},
        expiration="15m",
        realtime={"skipColumns": ["payload"]},
    )
    sdk = run_sdk(SDK_SIGN, SECRET, ours)
    sdk_header, sdk_claims = segments(sdk["token"])
    our_header, our_claims = segments(ours)
    assert our_header == sdk_header == {"alg": "HS256"}
    assert list(our_claims) == list(sdk_claims)  # same keys in the same order
    assert abs(our_claims["iat"] - sdk_claims["iat"]) <= 5
    for claims in (our_claims, sdk_claims):
        assert claims["exp"] - claims["iat"] == 15 * 60
    ignore = {"iat", "exp"}
    assert {k: v for k, v in our_claims.items() if k not in ignore} == {
        k: v for k, v in sdk_claims.items() if k not in ignore
    }
    if our_claims["iat"] == sdk_claims["iat"]:
        assert ours == sdk["token"]  # byte-identical when signed in the same second
    # The SDK's validateJWT accepts ours, and we accept theirs.
    assert sdk["ours_ok"] is True
    assert verify_public_token(sdk["token"], SECRET) == [
        "read:runs:run_1",
        "write:inputStreams:run_1",
    ]


def test_header_is_exactly_alg_hs256():
    token = sign_public_token(SECRET, sub="env_1", scopes=["read:runs:run_1"])
    header_b64 = token.split(".")[0]
    assert base64.urlsafe_b64decode(header_b64 + "==") == b'{"alg":"HS256"}'


def test_claims_and_default_expiry():
    before = int(time.time())
    token = sign_public_token(SECRET, sub="env_1", scopes=["read:runs:run_1"])
    _, claims = segments(token)
    assert claims["sub"] == "env_1"
    assert claims["pub"] is True
    assert claims["scopes"] == ["read:runs:run_1"]
    assert claims["iss"] == "https://id.trigger.dev"
    assert claims["aud"] == "https://api.trigger.dev"
    assert before <= claims["iat"] <= before + 5
    assert claims["exp"] - claims["iat"] == 900
    assert "realtime" not in claims


def test_scopes_none_omits_the_claim():
    _, claims = segments(sign_public_token(SECRET, sub="env_1", scopes=None))
    assert "scopes" not in claims


@pytest.mark.parametrize(
    ("expiration", "seconds"),
    [
        ("15m", 900),
        ("1h", 3600),
        ("2d", 172800),
        ("1 hour", 3600),
        ("1.5h", 5400),
        ("30s", 30),
        ("2 weeks", 1209600),
        ("1y", 31557600),
        (600, 600),
        (timedelta(minutes=5), 300),
    ],
)
def test_expiration_forms(expiration, seconds):
    _, claims = segments(sign_public_token(SECRET, sub="e", scopes=[], expiration=expiration))
    assert claims["exp"] - claims["iat"] == seconds


def test_absolute_datetime_expiration():
    when = datetime.now(UTC) + timedelta(hours=3)
    _, claims = segments(sign_public_token(SECRET, sub="e", scopes=[], expiration=when))
    assert claims["exp"] == int(when.timestamp())
    with pytest.raises(ValueError, match="timezone-aware"):
        sign_public_token(SECRET, sub="e", scopes=[], expiration=datetime.now())


@pytest.mark.parametrize("bad", ["15", "soon", "1 fortnight", "-1h ago", ""])
def test_bad_timespans_say_what_is_expected(bad):
    with pytest.raises(ValueError, match="expected a time span"):
        parse_timespan(bad)


def test_timespan_signs():
    assert parse_timespan("1h ago") == -3600
    assert parse_timespan("-2m") == -120
    assert parse_timespan("+2m") == 120
    assert parse_timespan("3 days from now") == 259200


def test_flatten_scopes_like_the_sdk():
    assert flatten_scopes(
        {
            "read": {"runs": ["run_1", "run_2"], "tags": "x", "batch": True, "tasks": False},
            "write": {"inputStreams": ["run_1"]},
            "trigger": None,
            "admin": True,
        }
    ) == [
        "read:runs:run_1",
        "read:runs:run_2",
        "read:tags:x",
        "read:batch",
        "write:inputStreams:run_1",
        "admin",
    ]
    assert flatten_scopes(["read:runs:run_1"]) == ["read:runs:run_1"]


@pytest.mark.parametrize("bad", [{"read": {"runs": [""]}}, {"read": {"runs": "  "}}])
def test_empty_scope_ids_are_rejected(bad):
    with pytest.raises(ValueError, match="must not be empty"):
        flatten_scopes(bad)


def test_flatten_rejects_a_bare_string():
    with pytest.raises(TypeError, match="not a string"):
        flatten_scopes("read:runs")


def test_verify_returns_scopes():
    token = sign_public_token(SECRET, sub="e", scopes=["read:runs:run_1"])
    assert verify_public_token(token, SECRET) == ["read:runs:run_1"]


def _forge(claims: dict, key: str = SECRET) -> str:
    base = {
        "sub": "e",
        "pub": True,
        "scopes": [],
        "iss": "https://id.trigger.dev",
        "aud": "https://api.trigger.dev",
        "exp": int(time.time()) + 60,
        "iat": int(time.time()),
    }
    base.update(claims)
    return jwt.encode({k: v for k, v in base.items() if v is not None}, key, algorithm="HS256")


# Tokens are forged inside the test, not at collection: an expiry measured from collection
# time would lapse in a long run.
@pytest.mark.parametrize(
    ("make_token", "message"),
    [
        (lambda: _forge({}, "tr_dev_" + "z" * 40), "signature does not match"),
        (lambda: _forge({"exp": int(time.time()) - 10}), "expired"),
        (lambda: _forge({"aud": "https://elsewhere"}), "audience"),
        (lambda: _forge({"iss": "https://elsewhere"}), "issuer"),
        (lambda: _forge({"pub": None}), "not a public access token"),
        (lambda: _forge({"pub": "true"}), "not a public access token"),
        (lambda: _forge({"exp": None}), "'exp'"),
        (lambda: _forge({"scopes": "read:runs"}), "not a list"),
        (lambda: "not-a-jwt", "invalid"),
        (lambda: "", "No public access token"),
    ],
)
def test_verify_failures_say_what_is_wrong(make_token, message):
    token = make_token()
    with pytest.raises(InvalidTokenError, match=message):
        verify_public_token(token, SECRET)


@pytest.mark.parametrize(
    ("scopes", "query", "allowed"),
    [
        (["read:runs:run_1"], ("read", "runs", "run_1"), True),
        (["read:runs:run_1"], ("read", "runs", "run_2"), False),
        (["read:runs:run_1"], ("write", "runs", "run_1"), False),
        (["read:runs:run_1"], ("read", "runs", None), False),
        (["read:runs"], ("read", "runs", "run_9"), True),
        (["read:runs"], ("read", "runs", None), True),
        (["read:all"], ("read", "inputStreams", "run_1"), True),
        (["read:all"], ("write", "inputStreams", "run_1"), False),
        (["*:runs"], ("write", "runs", "run_1"), True),
        (["*:all"], ("trigger", "tasks", "t"), True),
        (["admin"], ("write", "inputStreams", "run_1"), True),
        (["admin:runs"], ("read", "runs", "run_1"), False),
        (["read:tags:env:staging"], ("read", "tags", "env:staging"), True),
        (["read:tags:env"], ("read", "tags", "env:staging"), False),
        (["read:runs: "], ("read", "runs", " "), False),
        (["read::run_1", ":runs", "read"], ("read", "runs", "run_1"), False),
        (["write:inputStreams:run_1"], ("write", "inputStreams", "run_1"), True),
        ([], ("read", "runs", "run_1"), False),
    ],
)
def test_scope_matching_follows_the_server(scopes, query, allowed):
    assert scope_allows(scopes, *query) is allowed


def test_real_length_trigger_keys_sign_and_verify_without_warnings():
    import warnings

    short_key = "tr_dev_" + "a1b2c3d4e5f6g7h8i9j0"  # the length Trigger.dev issues: 27 bytes
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        token = sign_public_token(short_key, sub="e", scopes=["read:runs:run_1"])
        assert verify_public_token(token, short_key) == ["read:runs:run_1"]
