"""Credentials, scopes, triggering, token routes, CORS and the request log, over real HTTP."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from trigger_django.emulator.auth import scope_matches

from .conftest import AUTH, SECRET, UNREGISTERED_TASK, bearer

FORBIDDEN = {
    "error": "Unauthorized",
    "code": "unauthorized",
    "param": "access_token",
    "type": "authorization",
}


def make_jwt(scopes, *, secret=SECRET, expires_in=600, **claims) -> str:
    now = int(time.time())
    payload = {
        "sub": "env_test",
        "pub": True,
        "scopes": scopes,
        "iss": "https://id.trigger.dev",
        "aud": "https://api.trigger.dev",
        "iat": now,
        "exp": now + expires_in,
        **claims,
    }
    return jwt.encode(payload, secret, algorithm="HS256", headers={"typ": None})


def _stream_status(http, run_id: str, token: str, key: str = "out") -> int:
    with http.stream(
        "GET", f"/realtime/v1/streams/{run_id}/{key}", headers=bearer(token)
    ) as response:
        if response.status_code != 200:
            response.read()
        return response.status_code


def test_trigger_returns_a_run_and_a_scoped_public_token(http):
    response = http.post(
        f"/api/v1/tasks/{UNREGISTERED_TASK}/trigger", json={"payload": {"a": 1}}, headers=AUTH
    )

    assert response.status_code == 200
    body = response.json()
    assert body["isCached"] is False
    assert body["id"].startswith("run_")
    token = response.headers["x-trigger-jwt"]
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": "HS256"}
    claims = jwt.decode(
        token,
        SECRET,
        algorithms=["HS256"],
        audience="https://api.trigger.dev",
        issuer="https://id.trigger.dev",
    )
    scopes = [f"read:runs:{body['id']}", f"write:inputStreams:{body['id']}"]
    assert claims["scopes"] == scopes
    assert claims["pub"] is True
    assert claims["exp"] - claims["iat"] == 3600
    assert json.loads(response.headers["x-trigger-jwt-claims"]) == {
        "sub": claims["sub"],
        "pub": True,
        "scopes": scopes,
    }


def test_trigger_idempotency_key_returns_the_same_run(http):
    def trigger():
        return http.post(
            f"/api/v1/tasks/{UNREGISTERED_TASK}/trigger",
            json={"payload": {}},
            headers={**AUTH, "idempotency-key": "same-key-1"},
        ).json()

    first, second = trigger(), trigger()
    assert first["isCached"] is False
    assert second == {"id": first["id"], "isCached": True}


def test_trigger_decodes_superjson_payloads_for_simulated_tasks(emulator, http):
    payload = json.dumps({"json": {"parts": ["from", "superjson"]}, "meta": {}})
    response = http.post(
        "/api/v1/tasks/echo-parts/trigger",
        json={"payload": payload, "options": {"payloadType": "application/super+json"}},
        headers=AUTH,
    )
    run_id = response.json()["id"]
    run = emulator.wait_for(
        lambda: (r := emulator.run(run_id))["status"] == "COMPLETED_SUCCESSFULLY" and r
    )
    assert run["payload"] == {"parts": ["from", "superjson"]}
    assert run["streams"] == {"default": 2}

    not_a_string = http.post(
        "/api/v1/tasks/echo-parts/trigger",
        json={"payload": {"x": 1}, "options": {"payloadType": "application/super+json"}},
        headers=AUTH,
    )
    assert not_a_string.status_code == 422
    assert "must be a string" in not_a_string.json()["error"]


def test_trigger_with_a_trigger_token_and_one_time_use(http):
    token = make_jwt([f"trigger:tasks:{UNREGISTERED_TASK}"], otu=True)
    url = f"/api/v1/tasks/{UNREGISTERED_TASK}/trigger"

    first = http.post(url, json={"payload": {}}, headers=bearer(token))
    assert first.status_code == 200
    again = http.post(url, json={"payload": {}}, headers=bearer(token))
    assert again.status_code == 422
    assert again.json() == {
        "error": f"Cannot trigger {UNREGISTERED_TASK} with a one-time use token as it has "
        "already been used."
    }
    other_task = http.post(
        "/api/v1/tasks/echo-parts/trigger", json={"payload": {}}, headers=bearer(token)
    )
    assert (other_task.status_code, other_task.json()) == (403, FORBIDDEN)


def test_stream_read_accepts_secret_and_scoped_jwts(emulator, http):
    run_id, run_token = emulator.trigger(UNREGISTERED_TASK, {}, tags=["env:staging"])
    other_run, _ = emulator.trigger(UNREGISTERED_TASK, {})

    assert _stream_status(http, run_id, SECRET) == 200
    assert _stream_status(http, run_id, run_token) == 200
    assert _stream_status(http, run_id, make_jwt([f"read:tasks:{UNREGISTERED_TASK}"])) == 200
    assert _stream_status(http, run_id, make_jwt(["read:tags:env:staging"])) == 200
    assert _stream_status(http, run_id, make_jwt(["read:runs"])) == 200
    assert _stream_status(http, run_id, make_jwt(["*:all"])) == 200
    assert _stream_status(http, run_id, make_jwt(["admin"])) == 200
    assert _stream_status(http, other_run, run_token) == 403
    assert _stream_status(http, run_id, make_jwt(["write:runs"])) == 403
    assert _stream_status(http, run_id, make_jwt(["admin:runs"])) == 403
    assert _stream_status(http, run_id, make_jwt([])) == 403

    denied = http.get(f"/realtime/v1/streams/{other_run}/out", headers=bearer(run_token))
    assert denied.json() == FORBIDDEN


@pytest.mark.parametrize(
    "token",
    [
        make_jwt(["read:runs"], expires_in=-60),
        make_jwt(["read:runs"], secret="tr_dev_some_other_secret_key_0123456789abc"),
        make_jwt(["read:runs"], aud="https://example.com"),
    ],
    ids=["expired", "bad-signature", "wrong-audience"],
)
def test_invalid_public_tokens_are_401(emulator, http, token):
    run_id, _ = emulator.trigger(UNREGISTERED_TASK, {})
    response = http.get(f"/realtime/v1/streams/{run_id}/out", headers=bearer(token))
    assert response.status_code == 401
    assert response.json() == {"error": "Public Access Token is invalid"}


def test_unknown_keys_and_jwts_on_secret_only_routes_are_401(emulator, http):
    run_id, run_token = emulator.trigger(UNREGISTERED_TASK, {})
    invalid = {"error": "Invalid or Missing API key"}

    assert http.get(f"/realtime/v1/streams/{run_id}/out").json() == invalid
    wrong_key = http.get(f"/realtime/v1/streams/{run_id}/out", headers=bearer("tr_dev_wrong"))
    assert (wrong_key.status_code, wrong_key.json()) == (401, invalid)
    for method, path in [
        ("PUT", f"/realtime/v1/streams/{run_id}/self/out"),
        ("POST", f"/realtime/v1/streams/{run_id}/self/out/append"),
        ("POST", "/api/v1/auth/jwt/claims"),
        ("GET", "/_emulator/requests"),
    ]:
        response = http.request(method, path, content=b"x", headers=bearer(run_token))
        assert (response.status_code, response.json()) == (401, invalid), path


def test_unknown_run_is_404_even_for_jwts(http):
    response = http.get(
        "/realtime/v1/streams/run_missing/out", headers=bearer(make_jwt(["read:runs:other"]))
    )
    assert response.status_code == 404
    assert response.json() == {"error": "Not found"}


def test_jwt_claims_and_public_tokens(http):
    claims = http.post("/api/v1/auth/jwt/claims", headers=AUTH)
    assert claims.status_code == 200
    assert claims.json()["pub"] is True
    assert claims.json()["sub"]

    minted = http.post(
        "/api/v1/auth/public-tokens",
        json={"scopes": ["read:runs:run_1"], "expirationTime": "2m"},
        headers=AUTH,
    )
    decoded = jwt.decode(
        minted.json()["token"],
        SECRET,
        algorithms=["HS256"],
        audience="https://api.trigger.dev",
        issuer="https://id.trigger.dev",
    )
    assert decoded["scopes"] == ["read:runs:run_1"]
    assert decoded["exp"] - decoded["iat"] == 120
    empty = http.post("/api/v1/auth/public-tokens", json={"scopes": []}, headers=AUTH)
    assert empty.status_code == 400


def test_cors_preflight_and_exposed_headers(http):
    preflight = http.options(
        "/api/v1/tasks/echo-parts/trigger",
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,last-event-id",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert preflight.headers["access-control-allow-headers"] == (
        "authorization,content-type,last-event-id"
    )
    assert "POST" in preflight.headers["access-control-allow-methods"]

    triggered = http.post("/api/v1/tasks/echo-parts/trigger", json={"payload": {}}, headers=AUTH)
    assert triggered.headers["access-control-allow-origin"] == "*"
    exposed = {
        h.strip().lower() for h in triggered.headers["access-control-expose-headers"].split(",")
    }
    assert {"x-trigger-jwt", "x-trigger-jwt-claims", "x-stream-version", "electric-offset"} <= (
        exposed
    )
    missing = http.get("/nowhere", headers=AUTH)
    assert missing.headers["access-control-allow-origin"] == "*"


def test_request_log_records_credentials_without_secrets(emulator, http):
    run_id, run_token = emulator.trigger(UNREGISTERED_TASK, {})
    emulator.clear_requests()
    http.get(
        f"/realtime/v1/streams/{run_id}/missing-key",
        headers={**bearer(run_token), "Timeout-Seconds": "1", "Last-Event-ID": "3"},
    )
    http.get("/realtime/v1/streams/run_nope/out", headers=AUTH)

    log = emulator.requests()

    assert [entry["path"] for entry in log] == [
        f"/realtime/v1/streams/{run_id}/missing-key",
        "/realtime/v1/streams/run_nope/out",
    ]
    first, second = log
    assert second["index"] == first["index"] + 1
    assert first["auth"] == "jwt"
    assert first["jwt_scopes"] == [f"read:runs:{run_id}", f"write:inputStreams:{run_id}"]
    assert first["headers"]["timeout-seconds"] == "1"
    assert first["headers"]["last-event-id"] == "3"
    assert (second["auth"], second["status"]) == ("secret", 404)
    assert SECRET not in json.dumps(log)
    assert run_token not in json.dumps(log)


def test_request_log_says_which_stream_reads_are_still_open(emulator, http):
    run_id, _ = emulator.trigger(UNREGISTERED_TASK, {})
    emulator.clear_requests()
    path = f"/realtime/v1/streams/{run_id}/out"
    with http.stream("GET", path, headers={**AUTH, "Timeout-Seconds": "30"}) as response:
        assert response.status_code == 200
        (entry,) = emulator.requests()
        assert (entry["path"], entry["open"]) == (path, True)
    # The client went away: the read ends and says so.
    emulator.wait_for(lambda: not emulator.requests()[0]["open"], 10)
    http.get("/nowhere", headers=AUTH)
    assert [e["open"] for e in emulator.requests()] == [False, False]


@pytest.mark.parametrize(
    ("scope", "action", "kind", "ident", "expected"),
    [
        ("read:runs:run_1", "read", "runs", "run_1", True),
        ("read:runs:run_1", "read", "runs", "run_2", False),
        ("read:runs", "read", "runs", "run_2", True),
        ("read:tags:env:staging", "read", "tags", "env:staging", True),
        ("read:tags:env", "read", "tags", "env:staging", False),
        ("*:runs", "write", "runs", "x", True),
        ("read:all", "read", "inputStreams", "x", True),
        ("admin", "write", "inputStreams", "x", True),
        ("admin:runs", "read", "runs", "x", False),
        ("read", "read", "runs", "x", False),
        ("write:inputStreams:run_1", "read", "inputStreams", "run_1", False),
    ],
)
def test_scope_grammar(scope, action, kind, ident, expected):
    assert scope_matches(scope, action, kind, ident) is expected
