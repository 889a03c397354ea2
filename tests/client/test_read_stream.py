"""read_stream against scripted transports: framing, cursor, resume, retry and errors."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest

from trigger_django.client import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    GoneError,
    NotFoundError,
    PermissionDeniedError,
    StreamPart,
    UnprocessableEntityError,
    retry_delay,
)

from .conftest import SECRET
from .fakes import (
    ChunkStream,
    Script,
    batch,
    dropped,
    record,
    sse,
    v1_response,
    v2_response,
)


async def collect(stream, limit: int | None = None) -> list[StreamPart]:
    parts = []
    async for part in stream:
        parts.append(part)
        if limit is not None and len(parts) >= limit:
            break
    return parts


async def test_v2_batch_with_several_records(make_client):
    script = Script(
        v2_response(
            sse(
                batch(
                    record(0, {"n": 1}, record_id="a", ts=10),
                    record(1, "two", record_id="b", ts=11, headers=[["k", "v"]]),
                ),
                {"event": "ping", "data": '{"timestamp":1}'},
                batch(record(2, [3], record_id="c", ts=12)),
                "data: [DONE]\n\n",
            )
        )
    )
    stream = make_client(script).read_stream("run_1", "ai")
    parts = await collect(stream)
    assert parts == [
        StreamPart("0", {"n": 1}, 10, "a", ()),
        StreamPart("1", "two", 11, "b", (("k", "v"),)),
        StreamPart("2", [3], 12, "c", ()),
    ]
    assert stream.last_event_id == "2"
    assert stream.stream_version == "v2"
    assert len(script.requests) == 1  # a clean end finishes the iterator: no reconnect
    assert script.requests[0].url == "http://trigger.test/realtime/v1/streams/run_1/ai"


async def test_sdk_request_headers(make_client):
    script = Script(v2_response(b""))
    await collect(make_client(script).read_stream("run_1"))
    headers = script.requests[0].headers
    assert headers["accept"] == "text/event-stream"
    assert headers["cache-control"] == "no-store"
    assert headers["authorization"] == f"Bearer {SECRET}"
    assert headers["trigger-version"] == "4.8.3"
    assert headers["x-trigger-source"] == "sdk"
    assert headers["x-trigger-api-version"] == "2025-07-16"
    assert headers["content-type"] == "application/json"
    for absent in ("last-event-id", "x-trigger-stream-start", "timeout-seconds"):
        assert absent not in headers
    assert script.requests[0].url.path == "/realtime/v1/streams/run_1/default"


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"start_index": 3}, {"last-event-id": "2"}),
        ({"start_index": 1}, {"last-event-id": "0"}),
        ({"start_index": 0}, {}),
        ({"last_event_id": "7", "start_index": 3}, {"last-event-id": "7"}),
        ({"from_latest": True}, {"x-trigger-stream-start": "latest"}),
        ({"from_latest": True, "start_index": 2}, {"last-event-id": "1"}),
        ({"timeout_seconds": 60}, {"timeout-seconds": "60"}),
        ({"timeout_seconds": 1.5}, {"timeout-seconds": "1.5"}),
        ({"timeout_seconds": 0}, {}),
    ],
)
async def test_start_position_and_timeout_headers(make_client, kwargs, expected):
    script = Script(v2_response(b""))
    await collect(make_client(script).read_stream("run_1", **kwargs))
    headers = script.requests[0].headers
    for name in ("last-event-id", "x-trigger-stream-start", "timeout-seconds"):
        assert headers.get(name) == expected.get(name), name


async def test_from_latest_is_replaced_by_the_cursor_on_reconnect(make_client):
    script = Script(
        v2_response(sse(batch(record(5, "x"))), error=dropped()),
        v2_response(b""),
    )
    await collect(make_client(script).read_stream("run_1", from_latest=True))
    assert script.header(0, "x-trigger-stream-start") == "latest"
    assert script.header(1, "x-trigger-stream-start") is None
    assert script.header(1, "last-event-id") == "5"


async def test_resume_after_abrupt_end_network_error_and_error_event(make_client, sleeps):
    script = Script(
        v2_response(sse(batch(record(0, "a"), record(1, "b"))), error=dropped()),
        httpx.ConnectError("refused"),
        v2_response(sse(batch(record(2, "c")), {"event": "error", "data": "boom"})),
        v2_response(sse(batch(record(3, "d")))),
    )
    parts = await collect(make_client(script).read_stream("run_1"))
    assert [p.chunk for p in parts] == ["a", "b", "c", "d"]
    assert [r.headers.get("last-event-id") for r in script.requests] == [None, "1", "1", "2"]
    # The count restarts after each decoded record: 1, 2, then 1 again.
    assert sleeps.delays == [retry_delay(1, 0.5), retry_delay(2, 0.5), retry_delay(1, 0.5)]


async def test_command_records_are_skipped_but_advance_the_cursor(make_client):
    script = Script(
        v2_response(
            sse(batch(record(0, "a"), record(1, None, headers=[["", "trim"]], body="\x00\x01"))),
            error=dropped(),
        ),
        v2_response(sse(batch(record(2, None, headers=[["", "fence"]], body="")))),
    )
    stream = make_client(script).read_stream("run_1")
    parts = await collect(stream)
    assert [p.id for p in parts] == ["0"]
    assert script.header(1, "last-event-id") == "1"
    assert stream.last_event_id == "2"


async def test_malformed_record_headers_do_not_end_the_stream(make_client):
    script = Script(
        v2_response(
            sse(batch(record(0, "a", headers=[5]), record(1, "b", headers="x"), record(2, "c")))
        )
    )
    parts = await collect(make_client(script).read_stream("run_1"))
    assert [(p.id, p.chunk, p.headers) for p in parts] == [
        ("0", "a", ()),
        ("1", "b", ()),
        ("2", "c", ()),
    ]


async def test_malformed_batch_json_does_not_crash_and_advances_the_cursor(make_client):
    script = Script(
        v2_response(
            sse(
                {"event": "batch", "id": "4,5,300", "data": "{not json"},
                {"event": "batch", "id": "5,1,3", "data": '{"records": 7}'},
            ),
            error=dropped(),
        ),
        v2_response(sse(batch(record(6, "ok")))),
    )
    stream = make_client(script).read_stream("run_1")
    parts = await collect(stream)
    assert [p.chunk for p in parts] == ["ok"]
    assert script.header(1, "last-event-id") == "5"


async def test_malformed_record_body_gives_an_empty_part_and_advances(make_client):
    script = Script(
        v2_response(
            sse(
                batch(
                    record(0, None, body="{oops"),
                    record(1, None, body='"just a string"'),
                    {"seq_num": 2, "timestamp": 3},
                    "not a record",
                    {"timestamp": 4, "body": "{}"},
                    record(3, "fine", record_id="z"),
                )
            ),
            error=dropped(),
        ),
        v2_response(b""),
    )
    parts = await collect(make_client(script).read_stream("run_1"))
    # As the SDK: a body that is not an envelope yields a part whose chunk is undefined (None).
    assert [(p.id, p.chunk, p.record_id) for p in parts] == [
        ("0", None, None),
        ("1", None, None),
        ("2", None, None),
        ("3", "fine", "z"),
    ]
    assert script.header(1, "last-event-id") == "3"


async def test_duplicate_record_ids_are_dropped(make_client):
    script = Script(
        v2_response(
            sse(
                batch(record(0, "a", record_id="same"), record(1, "a2", record_id="same")),
                batch(record(2, "b", record_id="other"), record(3, "c", record_id="")),
                batch(record(4, "c2", record_id="")),
            )
        )
    )
    parts = await collect(make_client(script).read_stream("run_1"))
    assert [p.chunk for p in parts] == ["a", "b", "c", "c2"]  # empty ids are never deduped


async def test_dedupe_window_is_fifo_of_5000(make_client):
    first = [record(i, i, record_id=f"id{i}") for i in range(5001)]
    replay_oldest = record(5001, "old", record_id="id0")  # evicted: delivered again
    replay_recent = record(5002, "recent", record_id="id5000")  # still remembered: dropped
    script = Script(v2_response(sse(batch(*first), batch(replay_oldest, replay_recent))))
    parts = await collect(make_client(script).read_stream("run_1"))
    assert len(parts) == 5002
    assert parts[-1].chunk == "old"


async def test_v1_framing(make_client):
    body = sse(
        {"id": "1735689600000-0", "data": '{"n":1}'},
        {"id": "1735689600000-0", "data": '"two"'},
        ": ping\n\n",
        {"id": "1735689600001-0", "data": "not json"},
        {"event": "whatever", "id": "1735689600002-0", "data": "NaN"},
    )
    script = Script(v1_response(body, error=dropped()), v1_response(b""))
    stream = make_client(script).read_stream("run_1")
    parts = await collect(stream)
    assert parts == [
        StreamPart("1735689600000-0", {"n": 1}, 1735689600000),
        StreamPart("1735689600000-0", "two", 1735689600000),
        StreamPart("1735689600001-0", "not json", 1735689600001),
        StreamPart("1735689600002-0", "NaN", 1735689600002),
    ]
    assert stream.stream_version == "v1"
    assert script.header(1, "last-event-id") == "1735689600002-0"


async def test_v1_event_without_id_is_unknown_and_keeps_the_cursor(make_client):
    script = Script(v1_response(sse({"id": "5-0", "data": "1"}, {"data": "2"})))
    stream = make_client(script).read_stream("run_1")
    parts = await collect(stream)
    assert [p.id for p in parts] == ["5-0", "unknown"]
    assert stream.last_event_id == "5-0"


async def test_retry_schedule_is_exponential_capped_and_jittered(make_client, sleeps):
    failures = [httpx.Response(503), httpx.Response(429), httpx.Response(500, text="x")]
    failures += [httpx.ReadError("reset")] * 4 + [httpx.Response(502)]
    script = Script(*failures, v2_response(b""))
    await collect(make_client(script, retry_random=lambda: 0.25).read_stream("run_1"))
    bases = [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert sleeps.delays == pytest.approx([b * (1 - 0.5 * 0.25) for b in bases])
    assert retry_delay(1, 0.0) == pytest.approx(0.1)
    assert retry_delay(1, 1.0) == pytest.approx(0.05)
    assert retry_delay(30, 1.0) == pytest.approx(2.5)


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, BadRequestError),
        (404, NotFoundError),
        (409, ConflictError),
        (410, GoneError),
        (422, UnprocessableEntityError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
    ],
)
async def test_terminal_statuses_raise_typed_errors(make_client, sleeps, status, error_type):
    script = Script(httpx.Response(status, json={"error": "Not found"}))
    with pytest.raises(error_type) as caught:
        await collect(make_client(script).read_stream("run_x", "ai-output"))
    assert caught.value.status == status
    assert caught.value.message == "Not found"
    assert str(caught.value) == f"{status} Could not subscribe to stream run_x/ai-output: Not found"
    assert len(script.requests) == 1
    assert sleeps.delays == []


async def test_plain_text_error_body_is_the_message(make_client):
    script = Script(httpx.Response(400, text="Timeout seconds must be less than 600"))
    with pytest.raises(BadRequestError, match="must be less than 600"):
        await collect(make_client(script).read_stream("run_1", timeout_seconds=900))


async def test_refresh_token_is_called_once_on_401(make_client):
    calls = []

    async def refresh() -> str:
        calls.append(1)
        return "fresh-token"

    script = Script(
        httpx.Response(401, json={"error": "Public Access Token is invalid"}),
        v2_response(sse(batch(record(0, "a")))),
    )
    client = make_client(script, access_token="stale-token")
    parts = await collect(client.read_stream("run_1", refresh_token=refresh))
    assert [p.chunk for p in parts] == ["a"]
    assert calls == [1]
    assert script.header(0, "authorization") == "Bearer stale-token"
    assert script.header(1, "authorization") == "Bearer fresh-token"


async def test_second_auth_failure_after_refresh_is_terminal(make_client):
    calls = []

    async def refresh() -> str:
        calls.append(1)
        return "still-bad"

    script = Script(httpx.Response(403), httpx.Response(403, json={"error": "Unauthorized"}))
    with pytest.raises(PermissionDeniedError, match="Unauthorized"):
        await collect(make_client(script).read_stream("run_1", refresh_token=refresh))
    assert calls == [1]
    assert len(script.requests) == 2


async def test_failing_refresh_raises_the_auth_error(make_client):
    async def refresh() -> str:
        raise RuntimeError("cannot mint")

    script = Script(httpx.Response(401, json={"error": "expired"}))
    with pytest.raises(AuthenticationError, match="expired"):
        await collect(make_client(script).read_stream("run_1", refresh_token=refresh))


async def test_headers_timeout_aborts_and_retries(make_client, sleeps):
    hung = asyncio.Event()
    released = asyncio.Event()

    async def answers_too_late(request: httpx.Request) -> httpx.Response:
        hung.set()
        await released.wait()
        return v2_response(sse(batch(record(0, "too late"))))

    script = Script(answers_too_late, v2_response(sse(batch(record(0, "late")))))
    parts = await collect(make_client(script, header_timeout=0.05).read_stream("run_1"))
    assert hung.is_set()
    assert [p.chunk for p in parts] == ["late"]
    assert len(sleeps.delays) == 1
    released.set()  # the abandoned request's answer is closed unread by the client


async def test_stall_timeout_reconnects_from_the_cursor(make_client):
    first = v2_response(sse(batch(record(0, "a"))), hang=True)
    script = Script(first, v2_response(sse(batch(record(1, "b")))))
    parts = await collect(make_client(script).read_stream("run_1", stall_timeout=0.05))
    assert [p.chunk for p in parts] == ["a", "b"]
    assert script.header(1, "last-event-id") == "0"
    assert first.fake.closed.is_set()


async def test_aclose_closes_the_response_at_once(make_client):
    response = v2_response(sse(batch(record(0, "a"))), hang=True)
    stream = make_client(Script(response)).read_stream("run_1")
    assert (await stream.__anext__()).chunk == "a"
    assert not response.fake.closed.is_set()
    await stream.aclose()
    assert response.fake.closed.is_set()


async def test_cancelling_the_consumer_closes_the_response(make_client):
    response = v2_response(sse(batch(record(0, "a"))), hang=True)
    stream = make_client(Script(response)).read_stream("run_1")
    got_first = asyncio.Event()

    async def consume():
        async for _ in stream:
            got_first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_first.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert response.fake.closed.is_set()


async def test_async_with_closes_the_subscription(make_client):
    response = v2_response(sse(batch(record(0, "a"), record(1, "b"))), hang=True)
    async with make_client(Script(response)).read_stream("run_1") as stream:
        async for part in stream:
            assert part.chunk == "a"
            break
    assert response.fake.closed.is_set()


async def test_split_chunks_and_multibyte_characters(make_client):
    body = sse(batch(record(0, "h\u00e9llo \U0001f600", record_id="u")))
    chunks = [body[i : i + 1] for i in range(len(body))]
    script = Script(
        httpx.Response(200, headers={"x-stream-version": "v2"}, stream=ChunkStream(chunks))
    )
    parts = await collect(make_client(script).read_stream("run_1"))
    assert [p.chunk for p in parts] == ["h\u00e9llo \U0001f600"]


def test_bad_arguments_are_rejected():
    from trigger_django.client import TriggerClient

    client = TriggerClient("http://trigger.test", secret_key=SECRET)
    with pytest.raises(ValueError, match="run_id must not be empty"):
        client.read_stream("", "default")
    with pytest.raises(ValueError, match="stream key must not be empty"):
        client.read_stream("run_1", "")
    with pytest.raises(ValueError, match="start_index"):
        client.read_stream("run_1", start_index=-1)
    with pytest.raises(ValueError, match="stall_timeout"):
        client.read_stream("run_1", stall_timeout=0)


async def test_missing_credentials_are_a_clear_error():
    from trigger_django.client import TriggerClient

    async with TriggerClient("http://trigger.test", transport=Script().transport) as client:
        with pytest.raises(AuthenticationError, match="No API credential"):
            await collect(client.read_stream("run_1"))


def test_json_of_the_fakes_is_stable():
    # Guard for the helpers above: a batch carries the last seq_num in its SSE id.
    assert batch(record(4, "x"))["id"].startswith("4,")
    assert json.loads(batch(record(4, "x"))["data"])["records"][0]["seq_num"] == 4


async def test_malformed_batch_id_never_moves_the_cursor_back(make_client):
    script = Script(
        v2_response(
            sse(batch(record(8, "a")), {"event": "batch", "id": "0,0,0", "data": "{oops"}),
            error=dropped(),
        ),
        v2_response(b""),
    )
    await collect(make_client(script).read_stream("run_1"))
    assert script.header(1, "last-event-id") == "8"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a":1}', {"a": 1}),
        ('  {"a":1}\n', {"a": 1}),
        ("[1] ", [1]),
        ('"s"', "s"),
        ("1 2", "1 2"),
        ("NaN", "NaN"),
        ("-Infinity", "-Infinity"),
        ("", ""),
        ("{oops", "{oops"),
        ("null", None),
    ],
)
def test_safe_parse_json_is_javascripts_json_parse_or_the_text(text, expected):
    from trigger_django.client._client import _safe_parse_json

    assert _safe_parse_json(text) == expected


async def test_redirects_are_followed_even_on_a_shared_client(sleeps):
    from trigger_django.client import TriggerClient

    script = Script(
        httpx.Response(307, headers={"location": "http://other.test/realtime/v1/streams/r/k"}),
        v2_response(sse(batch(record(0, "moved")))),
    )
    async with (
        httpx.AsyncClient(transport=script.transport) as shared,
        TriggerClient("http://trigger.test", secret_key=SECRET, http_client=shared) as client,
    ):
        parts = await collect(client.read_stream("r", "k"))
    assert [p.chunk for p in parts] == ["moved"]
    assert str(script.requests[1].url) == "http://other.test/realtime/v1/streams/r/k"
    assert sleeps.delays == []


async def test_broken_content_encoding_is_retried(make_client, sleeps):
    broken = httpx.Response(
        200,
        headers={"x-stream-version": "v2", "content-encoding": "gzip"},
        stream=ChunkStream([b"definitely not gzip"]),
    )
    script = Script(broken, v2_response(sse(batch(record(0, "ok")))))
    parts = await collect(make_client(script).read_stream("run_1"))
    assert [p.chunk for p in parts] == ["ok"]
    assert len(sleeps.delays) == 1


async def test_logs_retries_and_terminal_errors_but_never_credentials(make_client, caplog):
    caplog.set_level(logging.DEBUG, logger="trigger_django.client")

    async def refresh() -> str:
        return "fresh-secret-token"

    script = Script(
        httpx.Response(503, json={"error": "overloaded"}),
        httpx.Response(401, json={"error": "expired"}),
        v2_response(sse(batch(record(0, "a"))), error=dropped()),
        httpx.Response(404, json={"error": "Not found"}),
    )
    client = make_client(script, access_token="stale-secret-token")
    with pytest.raises(NotFoundError):
        await collect(client.read_stream("run_1", refresh_token=refresh))
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert (
        logging.INFO,
        "Stream run_1/default: status 503 (overloaded); reconnecting in 0.075 s "
        "(attempt 1, Last-Event-ID None)",
    ) in messages
    assert any(
        level == logging.INFO and "refreshing the access token" in m for level, m in messages
    )
    assert any(
        level == logging.INFO and "RemoteProtocolError" in m and "Last-Event-ID 0" in m
        for level, m in messages
    )
    assert messages[-1] == (
        logging.WARNING,
        "404 Could not subscribe to stream run_1/default: Not found",
    )
    for _, message in messages:
        assert "secret-token" not in message
        assert SECRET not in message


async def test_cancelled_during_send_closes_the_late_response(make_client):
    # The caller is cancelled while the request waits for its headers: the cancellation is
    # immediate, the send is not interrupted inside httpx/httpcore, and the response that
    # arrives afterwards is closed (its connection returned) by the client.
    release = asyncio.Event()
    entered = asyncio.Event()
    late = v2_response(sse(batch(record(0, "late"))), hang=True)

    async def slow_headers(request: httpx.Request) -> httpx.Response:
        entered.set()
        await release.wait()
        return late

    client = make_client(Script(slow_headers))

    async def consume():
        async for _ in client.read_stream("run_1"):
            raise AssertionError("no part may be delivered to a cancelled reader")

    task = asyncio.create_task(consume())
    await asyncio.wait_for(entered.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert not late.fake.closed.is_set()
    release.set()
    async with asyncio.timeout(5):
        await client.wait_abandoned()
    assert late.fake.closed.is_set()
