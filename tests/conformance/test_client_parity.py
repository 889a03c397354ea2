"""Parity: the Python client's `read_stream` yields exactly what the SDK's `fetchStream` yields.

For a corpus of emulator streams on both framings (strings, objects, unicode, 100 KB parts,
10,000 parts, a stream piped by the SDK's own writer) and resumes by `start_index` and
`last_event_id`, both readers read the same streams and every part is compared: id and chunk,
in order, then timestamp, record id and headers. One Node process reads the whole corpus.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import jwt
import pytest

from tests.conformance.conftest import FRAMINGS, FramedEmulator, NodeSdk
from trigger_django.client import APIStatusError, TriggerClient

pytestmark = pytest.mark.conformance

# Small, so the idle close ends each read quickly on both sides.
IDLE_TIMEOUT_SECONDS = 1

HUNDRED_KB = 100 * 1024
CORPUS: dict[str, list[Any]] = {
    "strings": [f"token {index} " * (index % 5) for index in range(30)],
    "objects": [
        {"i": index, "ok": index % 2 == 0, "ratio": index / 8, "tags": ["a", None, {"n": index}]}
        for index in range(30)
    ],
    "mixed": [1, 2.5, -7, True, False, None, [], {}, "", "null", "1", '"quoted"', [[1], {"a": []}]],
    "unicode": [
        "emoji 🎉🚀 👩‍👩‍👧‍👦 🇩🇪",
        "𝄞 \U0001d573\U0001d58a\U0001d591\U0001d591\U0001d594 (4-byte UTF-8)",
        "中文 日本語 한국어 العربية עברית",
        "e\u0301 \u200b \ufeff \u2028 \u2029 \u0000 \u007f",
        "line\nbreak\r\nCRLF\rCR\ttab",
        "data: x\n\nid: 7\nevent: batch\n: comment",
        {"clé 🔑": ["ü", "ß", "𝄞"]},
    ],
    "big": [
        "a" * HUNDRED_KB,
        "𝄞" * (HUNDRED_KB // 4),
        {"text": "é" * (HUNDRED_KB // 2)},
    ],
    "many": [{"i": index} for index in range(10_000)],
}
# Written by the SDK's own pipe (chunked NDJSON): on v1 one body read can hold several lines,
# which then share one Redis entry id.
SDK_PIPED = [{"seq": index, "text": f"piped {index}"} for index in range(300)]


@dataclass(frozen=True, slots=True)
class Read:
    name: str
    framing: str
    run_id: str
    key: str
    last_event_id: str | None = None
    start_index: int | None = None

    def resumed(
        self, label: str, *, last_event_id: str | None = None, start_index: int | None = None
    ) -> Read:
        return Read(
            f"{self.name}@{label}", self.framing, self.run_id, self.key, last_event_id, start_index
        )


async def _read_all_with_client(
    emulators: dict[str, FramedEmulator], reads: list[Read]
) -> dict[str, list[dict[str, Any]]]:
    clients = {
        framing: TriggerClient(emulator.url, secret_key=emulator.secret_key)
        for framing, emulator in emulators.items()
    }

    async def one(read: Read) -> list[dict[str, Any]]:
        parts = []
        async for part in clients[read.framing].read_stream(
            read.run_id,
            read.key,
            last_event_id=read.last_event_id,
            start_index=read.start_index,
            timeout_seconds=IDLE_TIMEOUT_SECONDS,
        ):
            parts.append(
                {
                    "id": part.id,
                    "chunk": part.chunk,
                    "timestamp": part.timestamp,
                    "recordId": part.record_id,
                    "headers": [list(header) for header in part.headers],
                }
            )
        return parts

    try:
        results = await asyncio.gather(*(one(read) for read in reads))
    finally:
        for client in clients.values():
            await client.aclose()
    return {read.name: parts for read, parts in zip(reads, results, strict=True)}


def _read_all_with_sdk(
    node_sdk: NodeSdk, emulators: dict[str, FramedEmulator], reads: list[Read]
) -> dict[str, Any]:
    specs = [
        {
            "name": read.name,
            "apiUrl": emulators[read.framing].url,
            "runId": read.run_id,
            "key": read.key,
            "lastEventId": read.last_event_id,
            "startIndex": read.start_index,
        }
        for read in reads
    ]
    # Both emulators share the test secret key, so one Node process reads the whole corpus.
    return emulators["v2"].node(
        node_sdk,
        "read_streams.mjs",
        {"reads": specs, "timeoutInSeconds": IDLE_TIMEOUT_SECONDS},
        timeout=120,
    )


def _write_corpus(node_sdk: NodeSdk, emulator: FramedEmulator) -> list[Read]:
    reads = []
    for name, parts in CORPUS.items():
        run_id, _ = emulator.trigger("echo-parts", {"parts": parts, "key": name})
        emulator.wait_for_status(run_id, "COMPLETED_SUCCESSFULLY")
        reads.append(Read(f"{emulator.framing}/{name}", emulator.framing, run_id, name))
    run_id, _ = emulator.trigger("conformance-open", {})
    written = emulator.node(
        node_sdk,
        "write_read.mjs",
        {"runId": run_id, "writes": [{"key": "piped", "via": "pipe", "parts": SDK_PIPED}]},
    )
    assert written["writes"][0]["result"]["ok"], written["writes"]
    reads.append(Read(f"{emulator.framing}/sdk-piped", emulator.framing, run_id, "piped"))
    return reads


def _resume_reads(full_reads: list[Read], python_full: dict[str, Any]) -> list[Read]:
    by_name = {read.name: read for read in full_reads}
    resumes = []
    for framing in FRAMINGS:
        for name, start_index in [("strings", 3), ("many", 9_000), ("big", 3), ("mixed", 0)]:
            base = by_name[f"{framing}/{name}"]
            resumes.append(base.resumed(f"start_index={start_index}", start_index=start_index))
        for name in ("strings", "many", "unicode", "sdk-piped"):
            base = by_name[f"{framing}/{name}"]
            parts = python_full[base.name]
            assert parts, f"the Python client read nothing from {base.name}"
            middle, last = parts[len(parts) // 2]["id"], parts[-1]["id"]
            resumes.append(base.resumed("last_event_id=middle", last_event_id=str(middle)))
            resumes.append(base.resumed("last_event_id=last", last_event_id=str(last)))
    return resumes


@pytest.fixture(scope="module")
def parity(node_sdk: NodeSdk, emulators: dict[str, FramedEmulator]) -> dict[str, Any]:
    full_reads = [
        read for framing in FRAMINGS for read in _write_corpus(node_sdk, emulators[framing])
    ]
    # The Python client's full reads pick the resume points; both readers then resume from them.
    python_full = asyncio.run(_read_all_with_client(emulators, full_reads))
    resume_reads = _resume_reads(full_reads, python_full)
    all_reads = full_reads + resume_reads
    node_results = _read_all_with_sdk(node_sdk, emulators, all_reads)
    python_resumes = asyncio.run(_read_all_with_client(emulators, resume_reads))
    return {"reads": all_reads, "node": node_results, "python": {**python_full, **python_resumes}}


def test_client_yields_the_same_parts_as_fetch_stream(parity: dict[str, Any]) -> None:
    compared = 0
    for read in parity["reads"]:
        node = parity["node"][read.name]
        assert node["ok"], f"{read.name}: the SDK reader failed: {node.get('error')}"
        node_parts = [(part["id"], part["chunk"]) for part in node["parts"]]
        python_parts = [(part["id"], part["chunk"]) for part in parity["python"][read.name]]
        if python_parts != node_parts:
            first = next(
                (
                    index
                    for index, pair in enumerate(zip(python_parts, node_parts, strict=False))
                    if pair[0] != pair[1]
                ),
                min(len(python_parts), len(node_parts)),
            )
            pytest.fail(
                f"{read.name}: the client yields {len(python_parts)} parts, fetchStream "
                f"{len(node_parts)}; first difference at index {first}: "
                f"client {python_parts[first : first + 1]!r:.300} vs "
                f"SDK {node_parts[first : first + 1]!r:.300}"
            )
        compared += len(node_parts)
    streams = sum(1 for read in parity["reads"] if "@" not in read.name)
    print(
        f"client parity: {streams} streams, {len(parity['reads'])} reads, {compared} parts compared"
    )
    # The corpus is what the report quotes: both framings, every stream and resume.
    assert len(parity["reads"]) == 2 * (len(CORPUS) + 1) + 2 * 12
    assert compared > 2 * 10_000


def test_client_yields_the_same_timestamps_record_ids_and_headers(parity: dict[str, Any]) -> None:
    for read in parity["reads"]:
        node_parts = parity["node"][read.name]["parts"]
        python_parts = parity["python"][read.name]
        assert len(python_parts) == len(node_parts), read.name
        for index, (mine, theirs) in enumerate(zip(python_parts, node_parts, strict=True)):
            assert mine["timestamp"] == theirs["timestamp"], f"{read.name}[{index}] timestamp"
            assert mine["recordId"] == theirs["recordId"], f"{read.name}[{index}] record id"
            # The SDK reports no headers on v1 parts and [] for a v2 record without headers.
            assert mine["headers"] == (theirs["headers"] or []), f"{read.name}[{index}] headers"


def test_resumes_yield_suffixes_of_the_full_read(parity: dict[str, Any]) -> None:
    """Guards the corpus itself: a resume that yields everything would make parity vacuous."""
    full = {
        read.name: parity["node"][read.name]["parts"]
        for read in parity["reads"]
        if "@" not in read.name
    }
    for read in parity["reads"]:
        if "@" not in read.name:
            continue
        base = read.name.split("@", 1)[0]
        parts = parity["node"][read.name]["parts"]
        assert parts == full[base][len(full[base]) - len(parts) :], read.name
        if read.name.endswith("last_event_id=last"):
            assert parts == [], read.name
        if read.name.startswith("v2/") and read.start_index:
            assert len(parts) == max(len(full[base]) - read.start_index, 0), read.name


def _expired_token(secret_key: str, run_id: str) -> str:
    claims = {
        "sub": "env_conformance",
        "pub": True,
        "scopes": [f"read:runs:{run_id}"],
        "iss": "https://id.trigger.dev",
        "aud": "https://api.trigger.dev",
        "exp": int(time.time()) - 120,
    }
    return jwt.encode(claims, secret_key, algorithm="HS256", headers={"typ": None})


async def _client_errors(
    emulators: dict[str, FramedEmulator], reads: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    async def one(read: dict[str, Any]) -> dict[str, Any]:
        emulator = emulators[read["framing"]]
        async with TriggerClient(emulator.url, access_token=read["token"]) as client:
            try:
                parts = [
                    part
                    async for part in client.read_stream(
                        read["runId"], read["key"], timeout_seconds=IDLE_TIMEOUT_SECONDS
                    )
                ]
            except APIStatusError as error:
                return {"class": type(error).__name__, "status": error.status}
        return {"class": None, "status": None, "parts": len(parts)}

    results = await asyncio.gather(*(one(read) for read in reads))
    return {read["name"]: result for read, result in zip(reads, results, strict=True)}


def test_client_raises_the_same_errors_as_fetch_stream(
    node_sdk: NodeSdk, emulators: dict[str, FramedEmulator]
) -> None:
    reads: list[dict[str, Any]] = []
    for framing in FRAMINGS:
        emulator = emulators[framing]
        run_a, token_a = emulator.trigger("conformance-open", {})
        run_b, _ = emulator.trigger("conformance-open", {})
        cases = {
            "other run": (run_b, token_a),
            "wrong secret key": (run_a, "tr_dev_not_the_emulator_key_0123456789abcdefgh"),
            "expired token": (run_a, _expired_token(emulator.secret_key, run_a)),
            "unknown run": ("run_doesnotexist0000000000", emulator.secret_key),
        }
        for label, (run_id, token) in cases.items():
            reads.append(
                {
                    "name": f"{framing}/{label}",
                    "framing": framing,
                    "apiUrl": emulator.url,
                    "runId": run_id,
                    "key": "default",
                    "token": token,
                }
            )
    sdk = emulators["v2"].node(
        node_sdk, "read_streams.mjs", {"reads": reads, "timeoutInSeconds": IDLE_TIMEOUT_SECONDS}
    )
    client = asyncio.run(_client_errors(emulators, reads))
    expected = {
        "other run": ("PermissionDeniedError", 403),
        "wrong secret key": ("AuthenticationError", 401),
        "expired token": ("AuthenticationError", 401),
        "unknown run": ("NotFoundError", 404),
    }
    for read in reads:
        name = read["name"]
        assert not sdk[name]["ok"], f"{name}: the SDK read succeeded"
        sdk_error = (sdk[name]["error"]["class"], sdk[name]["error"]["status"])
        assert sdk_error == expected[name.split("/", 1)[1]], f"{name}: SDK raised {sdk_error}"
        assert (client[name]["class"], client[name]["status"]) == sdk_error, (
            f"{name}: the client raised {client[name]}, the SDK {sdk_error}"
        )
