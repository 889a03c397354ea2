from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.settings import TEST_TRIGGER_SECRET_KEY
from trigger_django.emulator.testing import EmulatorProcess

SECRET = TEST_TRIGGER_SECRET_KEY
AUTH = {"Authorization": f"Bearer {SECRET}"}
UNREGISTERED_TASK = "external-writer"


@pytest.fixture
def http(emulator: EmulatorProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.url, timeout=10.0) as client:
        yield client


@pytest.fixture
def http_v1(emulator_v1: EmulatorProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator_v1.url, timeout=10.0) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def electric(token: str) -> dict[str, str]:
    """The headers of a run-shape request as the SDK sends them (modern Electric names)."""
    return {**bearer(token), "x-trigger-electric-version": "1.0.0-beta.1"}


def read_body(client: httpx.Client, path: str, token: str = SECRET, **headers: str) -> bytes:
    """A whole stream response; ``Timeout-Seconds: 1`` unless given, so it ends by idle close."""
    request_headers = {"Timeout-Seconds": "1", **bearer(token)}
    request_headers.update({name.replace("_", "-"): value for name, value in headers.items()})
    response = client.get(path, headers=request_headers)
    assert response.status_code == 200, response.text
    return response.content


def mask_timestamps(body: bytes) -> bytes:
    return re.sub(rb'"timestamp":\d{13}', b'"timestamp":T', body)


def v1_ids(body: bytes) -> list[str]:
    return re.findall(r"^id: (\d+-\d+)$", body.decode(), flags=re.MULTILINE)


async def read_bodies(base_url: str, requests: list[tuple[str, dict[str, str]]]) -> list[bytes]:
    """Several whole stream reads at once (each ends by its 1 s idle close)."""
    import asyncio

    async with httpx.AsyncClient(base_url=base_url, timeout=10.0) as client:

        async def one(path: str, headers: dict[str, str]) -> bytes:
            response = await client.get(path, headers={"Timeout-Seconds": "1", **AUTH, **headers})
            assert response.status_code == 200, response.text
            return response.content

        return list(await asyncio.gather(*(one(path, headers) for path, headers in requests)))


def read_records(
    client: httpx.Client, path: str, count: int, token: str = SECRET, **headers: str
) -> list[dict]:
    """The first ``count`` v2 records of a stream, without waiting for its idle close."""
    import json

    request_headers = {"Timeout-Seconds": "5", **bearer(token)}
    request_headers.update({name.replace("_", "-"): value for name, value in headers.items()})
    records: list[dict] = []
    with client.stream("GET", path, headers=request_headers) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith('data: {"records"'):
                records.extend(json.loads(line.removeprefix("data: "))["records"])
            if len(records) >= count:
                break
    return records
