"""send_input, trigger, create_public_token and the client's pool handling."""

from __future__ import annotations

import json

import httpx
import pytest

from trigger_django.client import (
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RunCompletedError,
    RunHandle,
    TriggerClient,
    TriggerError,
    UnprocessableEntityError,
    UpstreamUnavailableError,
    verify_public_token,
)

from .conftest import SECRET
from .fakes import Script
from .test_tokens import segments


async def test_send_input_body_and_headers(make_client):
    script = Script(httpx.Response(200, json={"ok": True}))
    result = await make_client(script).send_input("run_1", "approval", {"answer": "é", "n": 42})
    assert result == {"ok": True}
    request = script.requests[0]
    assert request.method == "POST"
    assert request.url == "http://trigger.test/realtime/v1/streams/run_1/input/approval"
    assert request.content == '{"data":{"answer":"é","n":42}}'.encode()
    assert request.headers["content-length"] == str(len(request.content))
    assert request.headers["content-type"] == "application/json"
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert request.headers["trigger-version"] == "4.8.3"
    assert request.headers["x-trigger-source"] == "sdk"
    assert request.headers["x-trigger-request-idempotency-key"]


@pytest.mark.parametrize(
    ("response", "error_type", "message"),
    [
        (
            httpx.Response(404, json={"ok": False, "error": "Run not found"}),
            NotFoundError,
            "404 Could not send to input stream run_1/approval: Run not found",
        ),
        (
            httpx.Response(
                400, json={"ok": False, "error": "Cannot send to input stream on a completed run"}
            ),
            RunCompletedError,
            "completed run",
        ),
        (
            httpx.Response(400, json={"ok": False, "error": "Invalid request body"}),
            BadRequestError,
            "Invalid request body",
        ),
        (
            httpx.Response(413, json={"error": "Request body too large"}),
            PayloadTooLargeError,
            "413 Could not send to input stream run_1/approval: Request body too large",
        ),
        (
            httpx.Response(422, json={"ok": False, "error": "too big"}),
            UnprocessableEntityError,
            "too big",
        ),
        (
            httpx.Response(401, json={"error": "Invalid or Missing API key"}),
            AuthenticationError,
            "Invalid or Missing API key",
        ),
        (
            httpx.Response(403, json={"error": "Unauthorized"}),
            PermissionDeniedError,
            "Unauthorized",
        ),
        (httpx.Response(404, text="Not Found"), NotFoundError, "Not Found"),
    ],
)
async def test_send_input_errors(make_client, response, error_type, message):
    script = Script(response)
    with pytest.raises(error_type, match=message) as caught:
        await make_client(script).send_input("run_1", "approval", {"a": 1})
    assert caught.value.status == response.status_code
    assert len(script.requests) == 1
    if error_type is not RunCompletedError:
        assert not isinstance(caught.value, RunCompletedError)


async def test_send_input_retries_5xx_then_succeeds(make_client, sleeps):
    script = Script(
        httpx.Response(503), httpx.ConnectError("refused"), httpx.Response(200, json={"ok": True})
    )
    assert await make_client(script).send_input("run_1", "s", 1) == {"ok": True}
    keys = {r.headers["x-trigger-request-idempotency-key"] for r in script.requests}
    assert len(keys) == 1  # the same request id on every attempt
    assert len(sleeps.delays) == 2


async def test_send_input_gives_up_with_upstream_unavailable(make_client):
    script = Script(httpx.Response(500), httpx.Response(502), httpx.Response(429))
    with pytest.raises(UpstreamUnavailableError, match="after 3 attempts") as caught:
        await make_client(script).send_input("run_1", "s", 1)
    assert caught.value.status == 429


async def test_x_should_retry_false_makes_5xx_terminal(make_client):
    script = Script(
        httpx.Response(500, headers={"x-should-retry": "false"}, json={"error": "broken"})
    )
    with pytest.raises(TriggerError, match="broken") as caught:
        await make_client(script).send_input("run_1", "s", 1)
    assert getattr(caught.value, "status", None) == 500


async def test_send_input_rejects_unserialisable_data(make_client):
    with pytest.raises(TypeError, match="JSON-serialisable"):
        await make_client(Script()).send_input("run_1", "s", object())


async def test_trigger_uses_the_servers_token(make_client):
    script = Script(
        httpx.Response(
            200,
            json={"id": "run_9", "isCached": False},
            headers={"x-trigger-jwt": "server.jwt.token"},
        )
    )
    handle = await make_client(script).trigger(
        "my task/1",
        {"parts": ["a"]},
        idempotency_key="k1",
        tags=["t"],
        max_attempts=2,
        queue={"name": "q"},
        stream_version="v1",
    )
    assert handle == RunHandle("run_9", "server.jwt.token", False)
    request = script.requests[0]
    assert request.url.raw_path == b"/api/v1/tasks/my%20task%2F1/trigger"
    assert request.headers["x-trigger-realtime-streams-version"] == "v1"
    assert json.loads(request.content) == {
        "payload": {"parts": ["a"]},
        "options": {
            "payloadType": "application/json",
            "idempotencyKey": "k1",
            "tags": ["t"],
            "maxAttempts": 2,
            "queue": {"name": "q"},
        },
    }


async def test_trigger_signs_a_token_when_the_server_sends_none(make_client):
    script = Script(
        httpx.Response(
            200,
            json={"id": "run_9", "isCached": True},
            headers={
                "x-trigger-jwt-claims": json.dumps(
                    {"sub": "env_1", "pub": True, "realtime": {"skipColumns": ["x"]}}
                )
            },
        )
    )
    handle = await make_client(script).trigger("t", 1)
    assert handle.is_cached is True
    assert script.requests[0].headers["x-trigger-realtime-streams-version"] == "v2"
    assert verify_public_token(handle.public_access_token, SECRET) == ["read:runs:run_9"]
    header, claims = segments(handle.public_access_token)
    assert header == {"alg": "HS256"}
    assert claims["sub"] == "env_1"
    assert claims["realtime"] == {"skipColumns": ["x"]}
    assert claims["exp"] - claims["iat"] == 3600


async def test_trigger_without_a_token_or_secret_is_a_clear_error(make_client):
    script = Script(httpx.Response(200, json={"id": "run_9", "isCached": False}))
    client = make_client(script, secret_key=None, access_token="a.public.jwt")
    with pytest.raises(TriggerError, match="without a secret_key"):
        await client.trigger("t", 1)


async def test_trigger_errors_are_typed(make_client):
    script = Script(httpx.Response(404, json={"error": "Task not found"}))
    with pytest.raises(NotFoundError, match="404 Could not trigger task nope: Task not found"):
        await make_client(script).trigger("nope", {})


async def test_create_public_token_fetches_claims_and_signs(make_client):
    script = Script(httpx.Response(200, json={"sub": "env_42", "pub": True}))
    token = await make_client(script).create_public_token(
        {"read": {"runs": ["run_1"]}, "write": {"inputStreams": ["run_1"]}},
        "1h",
        realtime={"skipColumns": ["payload"]},
    )
    request = script.requests[0]
    assert (request.method, request.url.path) == ("POST", "/api/v1/auth/jwt/claims")
    assert verify_public_token(token, SECRET) == ["read:runs:run_1", "write:inputStreams:run_1"]
    header, claims = segments(token)
    assert header == {"alg": "HS256"}
    assert list(claims) == ["sub", "pub", "scopes", "realtime", "iss", "aud", "exp", "iat"]
    assert claims["sub"] == "env_42"
    assert claims["exp"] - claims["iat"] == 3600


async def test_create_public_token_validates_before_any_request(make_client):
    with pytest.raises(ValueError, match="must not be empty"):
        await make_client(Script()).create_public_token({"read": {"runs": [""]}})


async def test_client_closes_only_the_pool_it_created():
    shared = httpx.AsyncClient()
    async with TriggerClient("http://trigger.test", secret_key=SECRET, http_client=shared):
        pass
    assert not shared.is_closed
    await shared.aclose()
    async with TriggerClient("http://trigger.test", secret_key=SECRET) as own:
        pass
    assert own.http_client.is_closed


async def test_pool_limits_are_explicit():
    async with TriggerClient(
        "http://t", secret_key=SECRET, max_connections=7, max_keepalive_connections=3
    ) as client:
        pool = client.http_client._transport._pool
        assert pool._max_connections == 7
        assert pool._max_keepalive_connections == 3


def test_repr_never_shows_the_key():
    assert SECRET not in repr(TriggerClient("http://t", secret_key=SECRET))


def test_constructor_checks():
    with pytest.raises(ValueError, match="either http_client or transport"):
        TriggerClient(
            "http://t",
            http_client=httpx.AsyncClient(),
            transport=httpx.MockTransport(lambda r: httpx.Response(200)),
        )
    with pytest.raises(ValueError, match="base_url"):
        TriggerClient("")


async def test_429_waits_until_the_rate_limit_resets(make_client, sleeps, monkeypatch):
    monkeypatch.setattr("trigger_django.client._client.time.time", lambda: 1000.0)
    script = Script(
        httpx.Response(429, headers={"x-ratelimit-reset": "1002500"}),
        httpx.Response(200, json={"ok": True}),
    )
    await make_client(script).send_input("run_1", "s", 1)
    assert sleeps.delays == [pytest.approx(2.5)]


async def test_unreadable_claims_header_is_a_clear_error(make_client):
    script = Script(
        httpx.Response(200, json={"id": "run_9"}, headers={"x-trigger-jwt-claims": "{nope"})
    )
    with pytest.raises(TriggerError, match="x-trigger-jwt-claims is not a JSON object"):
        await make_client(script).trigger("t", 1)
