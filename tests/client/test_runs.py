"""subscribe_run / subscribe_run_with_streams on scripted upstreams (httpx.MockTransport)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from trigger_django.client import (
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    PermissionDeniedError,
    Run,
    RunError,
    RunShapeError,
    RunUpdate,
    StreamChunk,
    StreamEnded,
    api_status,
    parse_pg_array,
)

from .fakes import Script, batch, record, sse, v2_response

SCHEMA = {
    "id": {"type": "text"},
    "taskIdentifier": {"type": "text"},
    "createdAt": {"type": "timestamp"},
    "updatedAt": {"type": "timestamp"},
    "startedAt": {"type": "timestamp"},
    "completedAt": {"type": "timestamp"},
    "friendlyId": {"type": "text"},
    "number": {"type": "int4"},
    "isTest": {"type": "bool"},
    "status": {"type": "text"},
    "usageDurationMs": {"type": "int4"},
    "costInCents": {"type": "float8"},
    "baseCostInCents": {"type": "float8"},
    "payload": {"type": "text"},
    "payloadType": {"type": "text"},
    "metadata": {"type": "text"},
    "metadataType": {"type": "text"},
    "output": {"type": "text"},
    "outputType": {"type": "text"},
    "runTags": {"type": "text", "dims": 1},
    "error": {"type": "jsonb"},
    "realtimeStreams": {"type": "text", "dims": 1},
}
KEY = '"public"."TaskRun"/"cm1"'


def row(**overrides: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "id": "cm1",
        "taskIdentifier": "my-task",
        "createdAt": "2025-01-01T00:00:00.000",
        "updatedAt": "2025-01-01T00:00:01.500",
        "startedAt": "2025-01-01T00:00:00.250",
        "completedAt": None,
        "friendlyId": "run_1",
        "number": "7",
        "isTest": "f",
        "status": "EXECUTING",
        "usageDurationMs": "1500",
        "costInCents": "0.25",
        "baseCostInCents": "0",
        "payload": None,
        "payloadType": "application/json",
        "metadata": None,
        "metadataType": "application/json",
        "output": None,
        "outputType": "application/json",
        "runTags": None,
        "error": None,
        "realtimeStreams": "{}",
    }
    value.update(overrides)
    return value


def change(operation: str, value: dict[str, Any], key: str = KEY) -> dict[str, Any]:
    return {"key": key, "value": value, "headers": {"operation": operation}}


UP_TO_DATE = {"headers": {"control": "up-to-date"}}
MUST_REFETCH = {"headers": {"control": "must-refetch"}}


def snapshot(
    messages: list[Any] | None = None, *, handle: str = "run-cm1", offset: str = "1_0"
) -> httpx.Response:
    return httpx.Response(
        200,
        json=messages if messages is not None else [change("insert", row()), UP_TO_DATE],
        headers={
            "electric-offset": offset,
            "electric-handle": handle,
            "electric-schema": json.dumps(SCHEMA),
        },
    )


def live(
    messages: list[Any], *, offset: str = "2_1", cursor: str = "c1", handle: str = "run-cm1"
) -> httpx.Response:
    return httpx.Response(
        200,
        json=messages,
        headers={"electric-offset": offset, "electric-handle": handle, "electric-cursor": cursor},
    )


def finished(**overrides: Any) -> dict[str, Any]:
    return row(
        status="COMPLETED_SUCCESSFULLY",
        completedAt="2025-01-01T00:00:09.000",
        output='{"answer":42}',
        **overrides,
    )


async def collect(subscription) -> list:
    async with subscription as items:
        return [item async for item in items]


def query(request: httpx.Request) -> str:
    return request.url.query.decode()


async def test_snapshot_then_live_requests_and_headers(make_client):
    script = Script(
        snapshot(),
        live([UP_TO_DATE], offset="1_0", cursor="c1"),
        live([change("update", finished()), UP_TO_DATE], offset="9_2", cursor="c2"),
    )
    runs = await collect(make_client(script).subscribe_run("run_1"))
    assert [run.status for run in runs] == ["EXECUTING", "COMPLETED"]
    assert [query(r) for r in script.requests] == [
        "log=full&offset=-1&skipColumns=payload",
        "cursor=&handle=run-cm1&live=true&log=full&offset=1_0&skipColumns=payload",
        "cursor=c1&handle=run-cm1&live=true&log=full&offset=1_0&skipColumns=payload",
    ]
    assert all(r.url.path == "/realtime/v1/runs/run_1" for r in script.requests)
    headers = script.requests[0].headers
    assert headers["x-trigger-electric-version"] == "1.0.0-beta.1"
    assert headers["x-trigger-api-version"] == "2025-07-16"
    assert headers["trigger-version"] == "4.8.3"
    assert headers["authorization"].startswith("Bearer tr_dev_")
    assert "x-trigger-source" not in headers  # the realtime header set


async def test_decoded_run_fields(make_client):
    value = row(
        isTest="t",
        number="12",
        costInCents="1.5",
        usageDurationMs="250",
        runTags='{"a","b \\"quoted\\"","c\\\\d"}',
        realtimeStreams='{"default","ai-output"}',
        metadata='{"progress":0.4,"step":"Searching"}',
        error='{"type":"BUILT_IN_ERROR","name":"Error","message":"boom","stackTrace":"at x"}',
        idempotencyKey="idem-1",
    )
    client = make_client(Script(snapshot([change("insert", value), UP_TO_DATE])))
    async with client.subscribe_run("run_1") as runs:
        run = await runs.__anext__()
    assert isinstance(run, Run)
    assert run.id == "run_1"  # the friendly id, not the internal one
    assert run.task_identifier == "my-task"
    assert run.created_at == datetime(2025, 1, 1, tzinfo=UTC)
    assert run.updated_at == datetime(2025, 1, 1, 0, 0, 1, 500_000, tzinfo=UTC)
    assert run.started_at == datetime(2025, 1, 1, 0, 0, 0, 250_000, tzinfo=UTC)
    assert run.finished_at is None
    assert run.expired_at is None
    assert run.delayed_until is None
    assert run.is_test is True
    assert run.cost_in_cents == 1.5
    assert run.duration_ms == 250
    assert run.base_cost_in_cents == 0
    assert run.tags == ("a", 'b "quoted"', "c\\d")
    assert run.realtime_streams == ("default", "ai-output")
    assert run.metadata == {"progress": 0.4, "step": "Searching"}
    assert run.error == RunError("boom", name="Error", stack_trace="at x")
    assert run.idempotency_key == "idem-1"
    assert run.payload is None
    assert run.output is None
    assert (run.status, run.is_executing, run.is_completed) == ("EXECUTING", True, False)


async def test_partial_updates_are_merged_and_only_emitted_when_up_to_date(make_client):
    script = Script(
        snapshot(),
        # A batch without up-to-date: kept, not emitted.
        live([change("update", {"metadata": '{"step":"one"}'})], offset="2_1"),
        live([change("update", {"status": "WAITING_TO_RESUME"}), UP_TO_DATE], offset="3_2"),
        live([change("update", {"completedAt": "2025-01-01T00:00:05.000"}), UP_TO_DATE]),
    )
    runs = await collect(make_client(script).subscribe_run("run_1"))
    assert [(r.status, r.metadata) for r in runs] == [
        ("EXECUTING", None),
        ("WAITING", {"step": "one"}),  # both partial updates merged into the row
        ("WAITING", {"step": "one"}),
    ]
    assert runs[1].task_identifier == "my-task"  # columns the updates did not carry are kept
    assert runs[-1].finished_at == datetime(2025, 1, 1, 0, 0, 5, tzinfo=UTC)
    # Once up to date, the client stays live (only a 409 resets that).
    assert all("live=true" in query(r) for r in script.requests[1:])


async def test_409_must_refetch_starts_over_from_a_snapshot(make_client):
    conflict = httpx.Response(409, json=[MUST_REFETCH], headers={"electric-handle": "run-cm1-b"})
    script = Script(
        snapshot(),
        conflict,
        snapshot(
            [change("insert", row(status="EXECUTING", metadata='{"n":2}')), UP_TO_DATE],
            handle="run-cm1-b",
            offset="5_0",
        ),
        live(
            [change("update", {"completedAt": "2025-01-01T00:00:09.000"}), UP_TO_DATE],
            handle="run-cm1-b",
        ),
    )
    runs = await collect(make_client(script).subscribe_run("run_1"))
    assert [r.metadata for r in runs] == [None, {"n": 2}, {"n": 2}]
    assert runs[-1].finished_at is not None
    assert [query(r) for r in script.requests[1:]] == [
        "cursor=&handle=run-cm1&live=true&log=full&offset=1_0&skipColumns=payload",
        "expired_handle=run-cm1&handle=run-cm1-b&log=full&offset=-1&skipColumns=payload",
        "cursor=&expired_handle=run-cm1&handle=run-cm1-b&live=true&log=full&offset=5_0"
        "&skipColumns=payload",
    ]


async def test_a_409_without_a_handle_uses_the_next_handle(make_client):
    script = Script(
        snapshot(),
        httpx.Response(409, json=[MUST_REFETCH]),
        snapshot([change("insert", finished()), UP_TO_DATE], handle="run-cm1-next"),
    )
    runs = await collect(make_client(script).subscribe_run("run_1"))
    assert "handle=run-cm1-next" in query(script.requests[2])
    assert runs[-1].is_success


async def test_5xx_429_and_network_errors_are_retried_with_electric_backoff(make_client, sleeps):
    script = Script(
        httpx.Response(503),
        httpx.Response(429),
        httpx.ConnectError("refused"),
        httpx.Response(500, json={"error": "x"}),
        snapshot(),
        httpx.Response(502),
        live([change("update", finished()), UP_TO_DATE]),
    )
    runs = await collect(make_client(script).subscribe_run("run_1"))
    assert [r.status for r in runs] == ["EXECUTING", "COMPLETED"]
    # 100 ms, x1.3 per retry; back to 100 ms after a success.
    assert sleeps.delays == pytest.approx([0.1, 0.13, 0.169, 0.2197, 0.1])


async def test_backoff_is_capped_at_ten_seconds(make_client, sleeps):
    script = Script(
        *[httpx.Response(503)] * 20, snapshot([change("insert", finished()), UP_TO_DATE])
    )
    await collect(make_client(script).subscribe_run("run_1"))
    assert max(sleeps.delays) == 10.0
    assert sleeps.delays[-1] == 10.0


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
    ],
)
async def test_other_4xx_end_the_subscription_with_the_typed_error(
    make_client, sleeps, status, error
):
    script = Script(httpx.Response(status, json={"error": "nope"}))
    with pytest.raises(error, match=f"^{status} Could not subscribe to run run_1: nope$"):
        await collect(make_client(script).subscribe_run("run_1"))
    assert sleeps.delays == []


async def test_a_response_without_electric_headers_is_a_shape_error(make_client):
    script = Script(httpx.Response(200, json=[UP_TO_DATE], headers={"electric-offset": "1"}))
    with pytest.raises(RunShapeError, match="electric-handle, electric-schema"):
        await collect(make_client(script).subscribe_run("run_1"))
    script = Script(
        snapshot(),
        httpx.Response(
            200, json=[UP_TO_DATE], headers={"electric-offset": "1", "electric-handle": "h"}
        ),
    )
    with pytest.raises(RunShapeError, match="electric-cursor"):
        await collect(make_client(script).subscribe_run("run_1"))


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"an":"object"}', b"[" * 50_000],
)
async def test_a_body_that_is_not_a_message_array_is_a_shape_error(make_client, body):
    response = snapshot()
    script = Script(httpx.Response(200, content=body, headers=response.headers))
    with pytest.raises(RunShapeError, match="not a JSON array"):
        await collect(make_client(script).subscribe_run("run_1"))


@pytest.mark.parametrize(
    ("overrides", "column"),
    [
        ({"number": "seven"}, "number"),  # Number("seven") is NaN: z.number() refuses it
        ({"status": None}, "status"),
        ({"createdAt": "2025-01-01T00:00:00Z"}, "createdAt"),  # a zone: "…ZZ" is no date
        ({"completedAt": "yesterday"}, "completedAt"),
        ({"error": '{"type":"NOPE"}'}, "error"),
    ],
)
async def test_rows_the_sdk_schema_refuses_are_a_shape_error(make_client, overrides, column):
    script = Script(snapshot([change("insert", row(**overrides)), UP_TO_DATE]))
    with pytest.raises(RunShapeError, match=f"column '{column}'"):
        await collect(make_client(script).subscribe_run("run_1"))


async def test_malformed_messages_are_skipped(make_client):
    script = Script(
        snapshot(
            [
                42,
                {"key": KEY, "value": "not a row", "headers": {"operation": "insert"}},
                {"key": KEY, "headers": "x"},
                change("delete", row()),
                change("insert", finished()),
                {"headers": {"control": "something-new"}},
                UP_TO_DATE,
            ]
        )
    )
    runs = await collect(make_client(script).subscribe_run("run_1"))
    assert [r.status for r in runs] == ["COMPLETED"]


async def test_payload_output_and_metadata_packets_by_type(make_client):
    superjson = json.dumps(
        {
            "json": {"when": "2025-01-02T03:04:05.000Z", "big": "12345678901234567890", "u": None},
            "meta": {"values": {"when": ["Date"], "big": ["bigint"], "u": ["undefined"]}},
        }
    )
    value = row(
        payload="plain words",
        payloadType="text/plain",
        output=superjson,
        outputType="application/super+json",
        metadata='{"a":1}',
        metadataType=None,  # metadata is parsed only when both are set
        completedAt="2025-01-01T00:00:02.000",
        status="COMPLETED_SUCCESSFULLY",
    )
    script = Script(snapshot([change("insert", value), UP_TO_DATE]))
    [run] = await collect(make_client(script).subscribe_run("run_1", skip_columns=()))
    assert "skipColumns" not in query(script.requests[0])
    assert run.payload == "plain words"
    assert run.output == {
        "when": datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        "big": 12345678901234567890,
        "u": None,
    }
    assert run.metadata is None


async def test_store_packets_are_downloaded_once(make_client):
    async def presign(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/runs/run_1/packets/output"
        return httpx.Response(200, json={"presignedUrl": "http://store.test/out.json?sig=1"})

    async def download(request: httpx.Request) -> httpx.Response:
        assert str(request.url) == "http://store.test/out.json?sig=1"
        assert "authorization" not in request.headers  # the presigned URL carries the grant
        return httpx.Response(
            200, text='{"big":true}', headers={"content-type": "application/json"}
        )

    stored = {"output": "run_1/output.json", "outputType": "application/store"}
    script = Script(
        snapshot([change("insert", row(**stored)), UP_TO_DATE]),
        presign,
        download,
        live([change("update", {"metadata": '{"m":1}', **stored}), UP_TO_DATE]),
        live([change("update", {"completedAt": "2025-01-01T00:00:03.000"}), UP_TO_DATE]),
    )
    runs = await collect(make_client(script).subscribe_run("run_1"))
    assert [r.output for r in runs] == [{"big": True}] * 3
    assert len(script.requests) == 5  # downloaded once, cached while the packet is unchanged


def test_status_mapping_and_flags():
    table = {
        "PENDING": "QUEUED",
        "WAITING_FOR_DEPLOY": "PENDING_VERSION",
        "PENDING_VERSION": "PENDING_VERSION",
        "PAUSED": "WAITING",
        "WAITING_TO_RESUME": "WAITING",
        "RETRYING_AFTER_FAILURE": "EXECUTING",
        "EXECUTING": "EXECUTING",
        "DEQUEUED": "DEQUEUED",
        "COMPLETED_SUCCESSFULLY": "COMPLETED",
        "INTERRUPTED": "FAILED",
        "COMPLETED_WITH_ERRORS": "FAILED",
        "DELAYED": "DELAYED",
        "CANCELED": "CANCELED",
        "SYSTEM_FAILURE": "SYSTEM_FAILURE",
        "CRASHED": "CRASHED",
        "EXPIRED": "EXPIRED",
        "TIMED_OUT": "TIMED_OUT",
        "SOMETHING_NEW": "QUEUED",
    }
    assert {db: api_status(db) for db in table} == table


@pytest.mark.parametrize(
    ("status", "flags"),
    [
        ("PENDING", {"is_queued"}),
        ("DELAYED", {"is_queued"}),
        ("WAITING_TO_RESUME", {"is_waiting"}),
        ("DEQUEUED", {"is_executing"}),
        ("COMPLETED_SUCCESSFULLY", {"is_completed", "is_success"}),
        ("CRASHED", {"is_completed", "is_failed"}),
        ("TIMED_OUT", {"is_completed", "is_failed"}),
        ("CANCELED", {"is_cancelled"}),  # as in the SDK: not is_completed
    ],
)
async def test_boolean_helpers(make_client, status, flags):
    script = Script(snapshot([change("insert", row(status=status)), UP_TO_DATE]))
    async with make_client(script).subscribe_run("run_1") as runs:
        run = await runs.__anext__()
    names = [
        "is_queued",
        "is_waiting",
        "is_executing",
        "is_completed",
        "is_failed",
        "is_success",
        "is_cancelled",
    ]
    assert {name for name in names if getattr(run, name)} == flags


@pytest.mark.parametrize(
    ("literal", "expected"),
    [
        ("{}", []),
        ('{"a"}', ["a"]),
        ("{a,b}", ["a", "b"]),
        ('{"a,b","c}"}', ["a,b", "c}"]),
        ('{"x \\"y\\"","back\\\\slash"}', ['x "y"', "back\\slash"]),
        ('{NULL,"NULL"}', [None, "NULL"]),
        ('{{"a","b"},{"c"}}', [["a", "b"], ["c"]]),
        ('{"é ü"}', ["é ü"]),
    ],
)
def test_postgres_array_literals(literal, expected):
    assert parse_pg_array(literal) == expected


def test_bad_arguments_are_refused():
    from trigger_django.client import TriggerClient

    client = TriggerClient("http://trigger.test", secret_key="tr_dev_x")
    with pytest.raises(ValueError, match="run_id must not be empty"):
        client.subscribe_run("")
    with pytest.raises(ValueError, match=r"run_id .* control character"):
        client.subscribe_run("run_1\n")
    with pytest.raises(ValueError, match="not one string"):
        client.subscribe_run("run_1", skip_columns="payload")
    with pytest.raises(ValueError, match="invalid column name"):
        client.subscribe_run("run_1", skip_columns=["a,b"])
    with pytest.raises(ValueError, match="drain_timeout"):
        client.subscribe_run_with_streams("run_1", drain_timeout=-1)


async def test_aclose_stops_a_live_poll_at_once(make_client):
    entered = asyncio.Event()
    answered = asyncio.Event()

    async def held(request: httpx.Request) -> httpx.Response:
        entered.set()
        await answered.wait()  # held, as the server holds a live poll
        return httpx.Response(204)

    client = make_client(Script(snapshot(), held))
    runs = client.subscribe_run("run_1")
    assert (await runs.__anext__()).status == "EXECUTING"
    next_state = asyncio.ensure_future(runs.__anext__())
    await asyncio.wait_for(entered.wait(), 5)
    next_state.cancel()
    with pytest.raises(asyncio.CancelledError):
        await next_state
    await runs.aclose()
    # The server answers the abandoned poll in the end; the client's own close then has
    # nothing left to wait for.
    answered.set()


# -- with streams -------------------------------------------------------------------------------


def _routes(shape_steps: list, streams: dict[str, httpx.Response]) -> httpx.MockTransport:
    """Shape requests answered in order; stream reads by their key."""
    shape_script = Script(*shape_steps)

    async def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.startswith("/realtime/v1/streams/"):
            key = path.rsplit("/", 1)[1]
            return streams.pop(key)
        return await shape_script._handle(request)

    transport = httpx.MockTransport(handle)
    transport.shape_script = shape_script  # type: ignore[attr-defined]
    return transport


async def test_streams_are_discovered_as_they_appear(make_client):
    held = asyncio.Event()

    async def hold_then_finish(request: httpx.Request) -> httpx.Response:
        await held.wait()
        return live([change("update", finished(realtimeStreams='{"default","ai"}')), UP_TO_DATE])

    transport = _routes(
        [
            snapshot([change("insert", row(realtimeStreams='{"default"}')), UP_TO_DATE]),
            live([change("update", {"realtimeStreams": '{"default","ai"}'}), UP_TO_DATE]),
            hold_then_finish,
        ],
        {
            "default": v2_response(sse(batch(record(0, "d0"), record(1, "d1")))),
            "ai": v2_response(sse(batch(record(0, {"type": "text-delta", "delta": "hi"})))),
        },
    )
    from trigger_django.client import TriggerClient

    async with TriggerClient(
        "http://trigger.test", secret_key="tr_dev_x", transport=transport
    ) as c:
        events = []
        async with c.subscribe_run_with_streams("run_1", drain_timeout=5) as stream:
            async for event in stream:
                events.append(event)
                if sum(isinstance(e, StreamEnded) for e in events) == 2:
                    held.set()
    runs = [e.run for e in events if isinstance(e, RunUpdate)]
    assert [r.realtime_streams for r in runs] == [
        ("default",),
        ("default", "ai"),
        ("default", "ai"),
    ]
    assert runs[-1].is_success
    chunks = {
        key: [e.chunk for e in events if isinstance(e, StreamChunk) and e.stream == key]
        for key in ("default", "ai")
    }
    assert chunks == {"default": ["d0", "d1"], "ai": [{"type": "text-delta", "delta": "hi"}]}
    ended = [e for e in events if isinstance(e, StreamEnded)]
    assert sorted(e.stream for e in ended) == ["ai", "default"]
    assert all(e.error is None for e in ended)
    # Each stream chunk carries the run state that named its stream; each stream read once.
    ai_chunk = next(e for e in events if isinstance(e, StreamChunk) and e.stream == "ai")
    assert ai_chunk.run.realtime_streams == ("default", "ai")
    assert events.index(next(e for e in events if isinstance(e, RunUpdate))) == 0


async def test_a_stream_error_is_reported_and_the_run_continues(make_client):
    transport = _routes(
        [
            snapshot([change("insert", row(realtimeStreams='{"gone"}')), UP_TO_DATE]),
            live([change("update", finished()), UP_TO_DATE]),
        ],
        {"gone": httpx.Response(404, json={"error": "Not found"})},
    )
    from trigger_django.client import TriggerClient

    async with TriggerClient(
        "http://trigger.test", secret_key="tr_dev_x", transport=transport
    ) as c:
        events = await collect(c.subscribe_run_with_streams("run_1", drain_timeout=5))
    [ended] = [e for e in events if isinstance(e, StreamEnded)]
    assert isinstance(ended.error, NotFoundError)
    assert [e.run.status for e in events if isinstance(e, RunUpdate)] == ["EXECUTING", "COMPLETED"]


async def test_streams_left_open_are_closed_after_the_drain_time(make_client):
    forever = v2_response(sse(batch(record(0, "x"))), hang=True)
    transport = _routes(
        [snapshot([change("insert", finished(realtimeStreams='{"default"}')), UP_TO_DATE])],
        {"default": forever},
    )
    from trigger_django.client import TriggerClient

    async with TriggerClient(
        "http://trigger.test", secret_key="tr_dev_x", transport=transport
    ) as c:
        events = await collect(c.subscribe_run_with_streams("run_1", drain_timeout=0.2))
    assert [type(e).__name__ for e in events] == ["RunUpdate", "StreamChunk"]
    assert forever.fake.closed.is_set()


async def test_a_run_error_ends_the_events_with_it(make_client):
    transport = _routes([httpx.Response(403, json={"error": "Unauthorized"})], {})
    from trigger_django.client import TriggerClient

    async with TriggerClient(
        "http://trigger.test", secret_key="tr_dev_x", transport=transport
    ) as c:
        with pytest.raises(PermissionDeniedError):
            await collect(c.subscribe_run_with_streams("run_1"))
