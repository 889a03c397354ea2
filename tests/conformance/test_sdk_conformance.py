"""The official Trigger.dev SDK 4.8.3, unchanged, against the emulator, on both stream framings.

Each check runs a Node script (see the `.mjs` files here) in a subprocess and asserts on the JSON it
prints. Checks that share one Node process per framing (node start-up is ~0.5 s) are collected by a
module-scoped fixture and asserted by separate tests.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conformance.conftest import FRAMINGS, FramedEmulator, NodeSdk

pytestmark = pytest.mark.conformance

OPEN_TASK = "conformance-open"
OTHER_OPEN_TASK = "conformance-other"


def chunks(read: dict[str, Any]) -> list[Any]:
    return [part["chunk"] for part in read["parts"]]


def assert_read_ok(read: dict[str, Any], what: str) -> None:
    assert read["ok"], f"{what}: the SDK reader failed with {read.get('error')}"
    assert read["chunksMatchParts"], f"{what}: fetchStream chunks differ from the onPart parts"


def assert_sdk_error(result: dict[str, Any], error_class: str, status: int, what: str) -> None:
    assert not result["ok"], f"{what}: expected {error_class} {status}, but the call succeeded"
    error = result["error"]
    assert (error["class"], error["status"]) == (error_class, status), (
        f"{what}: expected the SDK's {error_class} with status {status}, got {error}"
    )
    assert error["isApiError"], f"{what}: {error} is not an ApiError subclass"


def id_order_key(framing: str) -> Callable[[str], tuple[int, ...]]:
    """How a framing's part ids order: v2 seq_num, v1 Redis `<ms>-<seq>`."""
    if framing == "v2":
        return lambda part_id: (int(part_id),)
    return lambda part_id: tuple(int(piece) for piece in part_id.split("-"))


def assert_ids_ascending(read: dict[str, Any], framing: str, what: str) -> None:
    order = id_order_key(framing)
    keys = [order(part["id"]) for part in read["parts"]]
    # v1: several NDJSON lines of one entry share its id, so ids only never go backwards.
    assert keys == sorted(keys), (
        f"{what}: part ids go backwards: {[p['id'] for p in read['parts']]}"
    )
    if framing == "v2":
        assert len(set(keys)) == len(keys), f"{what}: v2 seq_nums repeat"


# -- tasks.trigger / ApiClient.triggerTask ----------------------------------------------------


@pytest.mark.parametrize("framing", FRAMINGS)
def test_trigger_returns_run_id_and_token_scoped_to_that_run(
    node_sdk: NodeSdk, emulators: dict[str, FramedEmulator], framing: str
) -> None:
    emulator = emulators[framing]
    parts = ["alpha", "βeta", "🎉 gamma"]
    result = emulator.node(node_sdk, "trigger_tokens.mjs", {"taskId": OPEN_TASK, "parts": parts})
    for name in ("tasksTrigger", "apiClient"):
        report = result[name]
        run_id = report["runId"]
        assert run_id.startswith("run_"), f"{name}: run id {run_id!r}"
        assert report["tokenIsString"], f"{name}: no publicAccessToken"
        run = emulator.run(run_id)
        # The SDK's x-trigger-realtime-streams-version header chose the run's framing.
        assert run["streamVersion"] == framing, f"{name}: {run['streamVersion']=}"
        assert f"read:runs:{run_id}" in report["claims"]["scopes"], report["claims"]
        assert report["claims"]["pub"] is True

        assert_read_ok(report["readOwn"], f"{name}: token reads its own run")
        assert chunks(report["readOwn"]) == parts

        assert_sdk_error(
            report["readOther"], "PermissionDeniedError", 403, f"{name}: token reads another run"
        )
        assert report["readOther"]["parts"] == []

        assert report["sendInputOwn"] == {"ok": True, "value": {"ok": True}}, report["sendInputOwn"]
        assert_sdk_error(
            report["sendInputOther"],
            "PermissionDeniedError",
            403,
            f"{name}: token sends input to another run",
        )
        assert [(i["streamId"], i["data"]) for i in run["inputs"]] == [
            ("conformance", {"from": name})
        ]


# -- pipe and append, read back live ------------------------------------------------------------

PIPE_PARTS: list[Any] = [
    {"n": 1},
    "two",
    3,
    True,
    [1, "x", None],
    {"nested": {"list": [1, 2.5, {"deep": "ünïcödé"}]}},
    "",
    '{"looks": "like json"}',
    "last",
]
APPEND_PARTS = ["first", "second ✓", '{"looks": "like json"}', "", "fourth 𝄞"]


@pytest.mark.parametrize("framing", FRAMINGS)
def test_pipe_and_append_are_read_back_identical_in_order_and_live(
    node_sdk: NodeSdk, emulators: dict[str, FramedEmulator], framing: str
) -> None:
    emulator = emulators[framing]
    run_id, token = emulator.trigger(OPEN_TASK, {})
    result = emulator.node(
        node_sdk,
        "write_live.mjs",
        {
            "runId": run_id,
            "token": token,
            "pipeKey": "piped",
            "appendKey": "appended",
            "pipeParts": PIPE_PARTS,
            "appendParts": APPEND_PARTS,
        },
    )
    pipe, append = result["pipe"], result["append"]

    assert pipe["written"]["ok"], f"pipe().wait() failed: {pipe['written']}"
    assert_read_ok(pipe["read"], "pipe read-back")
    assert chunks(pipe["read"]) == PIPE_PARTS
    assert_ids_ascending(pipe["read"], framing, "pipe read-back")
    # Live: the writer's source only continued after the reader had the first part.
    timeline = pipe["timeline"]
    assert timeline.index("writer:yield-first") < timeline.index("reader:part"), timeline
    assert timeline.index("reader:part") < timeline.index(
        "writer:resumed-after-reader-saw-first"
    ), timeline
    assert timeline.index("writer:resumed-after-reader-saw-first") < timeline.index(
        "writer:wait-resolved"
    )

    assert append["sawFirst"]["ok"], f"reader never saw the first appended part: {append}"
    assert all(response == {"ok": True, "value": {"ok": True}} for response in append["responses"])
    assert_read_ok(append["read"], "append read-back")
    assert chunks(append["read"]) == APPEND_PARTS
    assert_ids_ascending(append["read"], framing, "append read-back")
    # Live: the second append was only made after the reader had received the first part.
    timeline = append["timeline"]
    assert timeline.index("reader:part") < timeline.index(
        "writer:resumed-after-reader-saw-first"
    ), timeline

    run = emulator.run(run_id)
    assert {"piped", "appended"} <= set(run["realtimeStreams"]), run["realtimeStreams"]


# -- resume -------------------------------------------------------------------------------------

RESUME_PARTS = [f"part-{index}" for index in range(8)]
RESUME_AFTER = 2
START_INDEX = 5


def suffix_after(read: dict[str, Any], position: int, framing: str) -> list[Any]:
    """Parts strictly after the part at `position`, by id (exclusive resume)."""
    order = id_order_key(framing)
    resume_key = order(read["parts"][position]["id"])
    return [part["chunk"] for part in read["parts"] if order(part["id"]) > resume_key]


@pytest.mark.parametrize("framing", FRAMINGS)
def test_resume_with_last_event_id_and_start_index(
    node_sdk: NodeSdk, emulators: dict[str, FramedEmulator], framing: str
) -> None:
    emulator = emulators[framing]
    run_id, _ = emulator.trigger(OPEN_TASK, {})
    result = emulator.node(
        node_sdk,
        "resume.mjs",
        {
            "runId": run_id,
            "appendKey": "appended",
            "pipeKey": "piped",
            "parts": RESUME_PARTS,
            "resumeAfter": RESUME_AFTER,
            "startIndex": START_INDEX,
        },
    )
    assert result["piped"]["ok"], result["piped"]
    for writer in ("append", "pipe"):
        reads = result[writer]
        what = f"{framing} {writer}"
        assert_read_ok(reads["full"], f"{what} full read")
        assert chunks(reads["full"]) == RESUME_PARTS

        assert_read_ok(reads["byLastEventId"], f"{what} lastEventId resume")
        expected_suffix = suffix_after(reads["full"], RESUME_AFTER, framing)
        assert chunks(reads["byLastEventId"]) == expected_suffix
        if writer == "append":
            # One entry/record per append, so the suffix is exactly the parts after the id.
            assert expected_suffix == RESUME_PARTS[RESUME_AFTER + 1 :]
        assert chunks(reads["byLastEventIdAtEnd"]) == []

        assert reads["byStreamsReadZero"] == {"ok": True, "chunks": RESUME_PARTS}
        # v2: Last-Event-ID = startIndex - 1 is a seq_num, so the first startIndex parts are
        # skipped. v1: "4" is read as the Redis id 4-0, older than every real entry: no effect.
        expected_from_start_index = RESUME_PARTS[START_INDEX:] if framing == "v2" else RESUME_PARTS
        assert chunks(reads["byStartIndexHeader"]) == expected_from_start_index
        assert reads["byStreamsRead"] == {"ok": True, "chunks": expected_from_start_index}


# -- input streams ------------------------------------------------------------------------------

APPROVAL = {
    "approved": True,
    "reviewer": "Zoë 🎻",
    "note": {"values": [1, 2.5, None, False], "clef": "𝄞"},
}


@pytest.mark.parametrize("framing", FRAMINGS)
def test_send_input_stream_reaches_waiting_task_and_completed_run_refuses(
    node_sdk: NodeSdk, emulators: dict[str, FramedEmulator], framing: str
) -> None:
    emulator = emulators[framing]
    open_run, open_token = emulator.trigger(
        "demo-ai-writer", {"prompt": "conformance", "tokens_per_second": 5000}
    )
    done_run, done_token = emulator.trigger(OPEN_TASK, {})
    emulator.complete_run(done_run)

    result = emulator.node(
        node_sdk,
        "input_streams.mjs",
        {
            "openRunId": open_run,
            "openToken": open_token,
            "completedRunId": done_run,
            "completedToken": done_token,
            "streamId": "approval",
            "payload": APPROVAL,
            "outputKey": "ai-output",
        },
    )
    assert result["sendOpen"] == {"ok": True, "value": {"ok": True}}, result["sendOpen"]
    run = emulator.wait_for_status(open_run, "COMPLETED_SUCCESSFULLY")
    assert [(item["streamId"], item["data"]) for item in run["inputs"]] == [("approval", APPROVAL)]
    # The task's wait_for_input got exactly the payload: its output and continuation use it.
    assert run["output"] == {"approved": True, "reviewer": APPROVAL["reviewer"]}
    assert_read_ok(result["output"], "ai-output read")
    assert "".join(chunks(result["output"])).endswith(f"\n\nApproved by {APPROVAL['reviewer']}.")

    for name in ("sendCompletedWithToken", "sendCompletedWithSecret"):
        assert_sdk_error(result[name], "BadRequestError", 400, f"{name} to a completed run")
        assert result[name]["error"]["message"] == (
            "Cannot send to input stream on a completed run"
        ), result[name]
    assert emulator.run(done_run)["inputs"] == []


# -- public tokens ------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=FRAMINGS)
def public_token_cases(
    request: pytest.FixtureRequest, node_sdk: NodeSdk, emulators: dict[str, FramedEmulator]
) -> dict[str, Any]:
    framing: str = request.param
    emulator = emulators[framing]
    run_a, _ = emulator.trigger(OPEN_TASK, {})
    run_b, _ = emulator.trigger(OTHER_OPEN_TASK, {})
    result = emulator.node(
        node_sdk,
        "public_tokens.mjs",
        {"runA": run_a, "runB": run_b, "taskA": OPEN_TASK, "taskB": OTHER_OPEN_TASK},
    )
    return {"runA": run_a, "runB": run_b, **result}


def test_public_tokens_work_inside_their_scopes(public_token_cases: dict[str, Any]) -> None:
    cases = public_token_cases["cases"]
    claims = public_token_cases["claims"]["readRunA"]
    assert claims["scopes"] == [f"read:runs:{public_token_cases['runA']}"]
    for name, expected in [
        ("readRunA_readsA", ["part of A"]),
        ("readTaskA_readsA", ["part of A"]),
        ("readAllRuns_readsA", ["part of A"]),
        ("readAllRuns_readsB", ["part of B"]),
    ]:
        assert_read_ok(cases[name], name)
        assert chunks(cases[name]) == expected, name
    assert cases["writeInputA_sendsA"] == {"ok": True, "value": {"ok": True}}


def test_public_tokens_refused_for_another_run_or_task(public_token_cases: dict[str, Any]) -> None:
    cases = public_token_cases["cases"]
    for name in ("readRunA_readsB", "readTaskA_readsB", "writeInputA_sendsB"):
        assert_sdk_error(cases[name], "PermissionDeniedError", 403, name)


def test_public_tokens_refused_for_the_wrong_action(public_token_cases: dict[str, Any]) -> None:
    cases = public_token_cases["cases"]
    for name in ("writeInputA_readsA", "readRunA_sendsA", "readRunA_triggersA", "noScopes_readsA"):
        assert_sdk_error(cases[name], "PermissionDeniedError", 403, name)
    # Stream writes accept only secret keys and run tokens; a JWT there is an unknown API key.
    assert_sdk_error(cases["readRunA_appendsA"], "AuthenticationError", 401, "JWT appends")


def test_expired_public_token_is_refused(public_token_cases: dict[str, Any]) -> None:
    cases = public_token_cases["cases"]
    assert_sdk_error(cases["expired_readsA"], "AuthenticationError", 401, "expired token reads")
    assert_sdk_error(cases["expired_sendsA"], "AuthenticationError", 401, "expired token sends")


def test_public_token_with_a_bad_signature_is_refused(public_token_cases: dict[str, Any]) -> None:
    cases = public_token_cases["cases"]
    assert_sdk_error(cases["wrongKey_readsA"], "AuthenticationError", 401, "wrong signing key")
    assert_sdk_error(cases["tampered_readsA"], "AuthenticationError", 401, "tampered signature")


def test_trigger_public_token_triggers_only_its_task(public_token_cases: dict[str, Any]) -> None:
    cases = public_token_cases["cases"]
    assert public_token_cases["claims"]["triggerTaskA"]["scopes"] == [f"trigger:tasks:{OPEN_TASK}"]
    triggered = cases["triggerTaskA_triggersA"]
    assert triggered["ok"], triggered
    assert triggered["value"]["id"].startswith("run_")
    assert triggered["value"]["publicAccessToken"]
    assert_sdk_error(
        cases["triggerTaskA_triggersB"], "PermissionDeniedError", 403, "trigger another task"
    )


# -- payloads: unicode, 100 KB parts, 10,000 parts ----------------------------------------------

UNICODE_STRINGS = [
    "emoji 🎉🚀 family 👩‍👩‍👧‍👦 flag 🇩🇪",
    "treble clef 𝄞 and \U0001d573\U0001d58a\U0001d591\U0001d591\U0001d594 (4-byte UTF-8)",
    "中文字符 日本語 한국어",
    "العربية עברית (RTL)",
    "combining e\u0301 vs é; zero-width\u200bspace; BOM \ufeff",
    "line\nbreak, CRLF\r\n, CR\r, tab\t, LS\u2028 PS\u2029",
    'quote " backslash \\ slash / NUL \u0000 DEL \u007f',
    "data: not an SSE field\n\nid: 99\nevent: batch",
]
UNICODE_PARTS: list[Any] = [
    *UNICODE_STRINGS,
    {"emoji": "🎉", "clef": "𝄞", "keys too 🔑": ["ü", "ß", "𝄞"]},
]
HUNDRED_KB = 100 * 1024
BIG_PARTS: list[Any] = [
    "a" * HUNDRED_KB,
    "𝄞" * (HUNDRED_KB // 4),  # 100 KB of 4-byte characters
    {"text": "é" * (HUNDRED_KB // 2), "n": 1},
    ("0123456789abcdef" * (HUNDRED_KB // 16))[:-1] + "🎉",
]
MANY_PARTS: list[Any] = [{"i": index, "s": f"part {index}"} for index in range(10_000)]


@pytest.fixture(scope="module", params=FRAMINGS)
def payload_streams(
    request: pytest.FixtureRequest, node_sdk: NodeSdk, emulators: dict[str, FramedEmulator]
) -> dict[str, Any]:
    framing: str = request.param
    emulator = emulators[framing]
    run_id, token = emulator.trigger(OPEN_TASK, {})
    writes = [
        {"key": "unicode-pipe", "via": "pipe", "parts": UNICODE_PARTS},
        {"key": "unicode-append", "via": "append", "parts": UNICODE_STRINGS},
        {"key": "big-pipe", "via": "pipe", "parts": BIG_PARTS},
        {
            "key": "big-append",
            "via": "append",
            "parts": [p for p in BIG_PARTS if isinstance(p, str)],
        },
        {"key": "many-pipe", "via": "pipe", "parts": MANY_PARTS},
    ]
    result = emulator.node(
        node_sdk,
        "write_read.mjs",
        {"runId": run_id, "token": token, "writes": writes},
        timeout=120,
    )
    for write in result["writes"]:
        assert write["result"]["ok"], f"{framing} {write['key']} via {write['via']}: {write}"
    return {"framing": framing, **result}


def test_unicode_parts_arrive_intact(payload_streams: dict[str, Any]) -> None:
    reads = payload_streams["reads"]
    assert_read_ok(reads["unicode-pipe"], "unicode via pipe")
    assert chunks(reads["unicode-pipe"]) == UNICODE_PARTS
    assert_read_ok(reads["unicode-append"], "unicode via append")
    assert chunks(reads["unicode-append"]) == UNICODE_STRINGS


def test_100kb_parts_arrive_intact(payload_streams: dict[str, Any]) -> None:
    reads = payload_streams["reads"]
    assert_read_ok(reads["big-pipe"], "100 KB parts via pipe")
    assert chunks(reads["big-pipe"]) == BIG_PARTS
    assert_read_ok(reads["big-append"], "100 KB parts via append")
    assert chunks(reads["big-append"]) == [p for p in BIG_PARTS if isinstance(p, str)]


def test_10000_part_stream_arrives_intact(payload_streams: dict[str, Any]) -> None:
    read = payload_streams["reads"]["many-pipe"]
    assert_read_ok(read, "10,000 parts via pipe")
    assert len(read["parts"]) == len(MANY_PARTS)
    assert chunks(read) == MANY_PARTS
    assert_ids_ascending(read, payload_streams["framing"], "10,000 parts")


# -- v2 batches as S2 sends them: 600 parts of 100 KB -------------------------------------------

BATCHED_PART_COUNT = 600
BATCHED_PART_SIZE = 100 * 1024


def batched_part(index: int) -> str:
    head = f"part {index:04d} "
    return head + chr(ord("a") + index % 26) * (BATCHED_PART_SIZE - len(head))


def test_sdk_reads_a_60_mb_stream_sent_in_one_mib_batches(
    node_sdk: NodeSdk, emulators: dict[str, FramedEmulator]
) -> None:
    emulator = emulators["v2"]
    run_id, token = emulator.trigger(OPEN_TASK, {})
    parts = [batched_part(index) for index in range(BATCHED_PART_COUNT)]
    with httpx.Client(base_url=emulator.url, timeout=60.0) as client:
        written = client.post(
            f"/realtime/v1/streams/{run_id}/self/big",
            content=((json.dumps(part) + "\n").encode() for part in parts),
            headers={"Authorization": f"Bearer {emulator.secret_key}"},
        )
        assert written.status_code == 200, written.text
        # What the SDK is about to read: no SSE event over 1.1 MB, no batch over 1 MiB metered.
        body = client.get(
            f"/realtime/v1/streams/{run_id}/big",
            headers={"Authorization": f"Bearer {token}", "Timeout-Seconds": "1"},
        ).content
    events = [block for block in body.split(b"\n\n") if block.startswith(b"event: batch")]
    assert len(events) == 60
    assert max(len(block) + 2 for block in events) < 1_100_000
    for block in events:
        records = json.loads(block.split(b"data: ", 1)[1])["records"]
        assert sum(8 + len(record["body"].encode()) for record in records) <= 1024 * 1024

    result = emulator.node(
        node_sdk, "read_digests.mjs", {"runId": run_id, "key": "big", "token": token}, timeout=120
    )
    assert result["ok"], f"the SDK reader failed with {result['error']}"
    assert result["chunksMatchParts"]
    assert result["parts"] == [
        {
            "id": str(index),
            "length": len(part),
            "sha256": hashlib.sha256(part.encode()).hexdigest(),
        }
        for index, part in enumerate(parts)
    ]


# -- runs.subscribeToRun: live run shapes -------------------------------------------------------


def test_subscribe_to_run_follows_every_change_through_a_409_to_completion(
    node_sdk: NodeSdk, emulators: dict[str, FramedEmulator]
) -> None:
    emulator = emulators["v2"]
    run_id, token = emulator.trigger(OPEN_TASK, {"prompt": "subscribe"})
    steps: list[dict[str, Any]] = [
        {"update": {"status": "WAITING_TO_RESUME"}},
        {"metadata": {"operations": [{"type": "set", "key": "progress", "value": 0.4}]}},
        {"fault": "must-refetch"},
        {"update": {"status": "EXECUTING", "tags": ["user:7"]}},
        {"stream": "answer"},
        {"metadata": {"metadata": {"progress": 1, "step": "Done"}}},
        {"complete": {"answer": 42}},
    ]
    result = emulator.node(
        node_sdk, "subscribe_run.mjs", {"runId": run_id, "token": token, "steps": steps}
    )
    assert result["error"] is None, result["error"]
    seen = result["runs"]
    observed = [
        (
            run["status"],
            run.get("metadata"),
            run["tags"],
            run["realtimeStreams"],
            run.get("output"),
            run["isCompleted"],
            run.get("finishedAt") is not None,
        )
        for run in seen
    ]
    waiting = ("WAITING", None, [], [], None, False, False)
    progress = ("WAITING", {"progress": 0.4}, [], [], None, False, False)
    tagged = ("EXECUTING", {"progress": 0.4}, ["user:7"], [], None, False, False)
    assert observed == [
        ("EXECUTING", None, [], [], None, False, False),
        waiting,
        progress,
        progress,  # the same run again after the 409, from the refetched snapshot
        tagged,
        ("EXECUTING", {"progress": 0.4}, ["user:7"], ["answer"], None, False, False),
        ("EXECUTING", {"progress": 1, "step": "Done"}, ["user:7"], ["answer"], None, False, False),
        (
            "COMPLETED",
            {"progress": 1, "step": "Done"},
            ["user:7"],
            ["answer"],
            {"answer": 42},
            True,
            True,
        ),
    ]
    assert all(run["id"] == run_id for run in seen)
    assert seen[0]["payload"] == {"prompt": "subscribe"}
    assert (seen[1]["isWaiting"], seen[1]["isExecuting"]) == (True, False)
    statuses = [(request["query"], request["status"]) for request in result["requests"]]
    assert [status for _, status in statuses].count(409) == 1
    # The SDK refetched after the 409 with offset -1 under the new handle, naming the old one.
    after_409 = statuses[[status for _, status in statuses].index(409) + 1][0]
    assert "offset=-1" in after_409
    assert "expired_handle=run-" in after_409
    assert f"handle={emulator.run(run_id)['shapeHandle']}" in after_409


def test_subscribe_to_run_ends_on_a_failed_run_with_its_error(
    node_sdk: NodeSdk, emulators: dict[str, FramedEmulator]
) -> None:
    emulator = emulators["v2"]
    run_id, token = emulator.trigger(OPEN_TASK, {})
    result = emulator.node(
        node_sdk,
        "subscribe_run.mjs",
        {"runId": run_id, "token": token, "steps": [{"fail": "the tool broke"}]},
    )
    assert result["error"] is None, result["error"]
    first, last = result["runs"]
    assert (first["status"], last["status"]) == ("EXECUTING", "FAILED")
    assert (last["isFailed"], last["isCompleted"], last["isSuccess"]) == (True, True, False)
    assert last["error"]["message"] == "the tool broke"
    assert last.get("output") is None
