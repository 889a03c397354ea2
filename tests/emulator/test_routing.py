"""The routing table: where overlapping patterns meet, and what an unknown route answers."""

from __future__ import annotations

import pytest

from trigger_django.emulator.http import HttpError
from trigger_django.emulator.routes import ROUTER
from trigger_django.emulator.routing import Route, Router, route

from .conftest import AUTH, UNREGISTERED_TASK


async def _noop(call: object) -> None:
    return None


def test_first_matching_pattern_decides():
    input_route = route("/x/{run}/input/{stream}", GET=_noop)
    any_route = route("/x/{run}/{target}/{key}", ANY=_noop)
    router = Router([input_route, any_route])
    handler, params = router.resolve("GET", "/x/r1/input/approval") or (None, None)
    assert (handler, params) == (_noop, {"run": "r1", "stream": "approval"})
    # The input pattern matched the path first; it has no PUT, so PUT is a 404, not `any_route`.
    with pytest.raises(HttpError) as refused:
        router.resolve("PUT", "/x/r1/input/approval")
    assert refused.value.status == 404
    assert router.resolve("DELETE", "//x/r1//self/out/") == (
        _noop,
        {"run": "r1", "target": "self", "key": "out"},
    )
    assert router.resolve("GET", "/x/r1") is None


def test_route_segments_and_any():
    built = route("/a/{b}/c", ANY=_noop, GET=_noop)
    assert isinstance(built, Route)
    assert built.segments == ("a", "{b}", "c")
    assert set(built.handlers) == {"*", "GET"}
    assert built.match(["a", "1", "c"]) == {"b": "1"}
    assert built.match(["a", "1"]) is None
    assert built.match(["a", "1", "d"]) is None


def test_every_route_has_a_handler_for_its_methods():
    for candidate in ROUTER.routes:
        assert candidate.handlers, candidate.pattern
        assert all(callable(handler) for handler in candidate.handlers.values())


def test_edge_routes_answer_as_before(emulator, http):
    run_id, _ = emulator.trigger(UNREGISTERED_TASK, {})
    put_input = http.put(f"/realtime/v1/streams/{run_id}/input/approval", headers=AUTH)
    assert (put_input.status_code, put_input.json()) == (404, {"error": "Not found"})
    assert put_input.headers["x-should-retry"] == "false"
    delete = http.delete(f"/realtime/v1/streams/{run_id}/self/out", headers=AUTH)
    assert (delete.status_code, delete.text) == (
        405,
        "Only HEAD requests are allowed for this endpoint",
    )
    post_read = http.post(f"/realtime/v1/streams/{run_id}/out", headers=AUTH)
    assert post_read.status_code == 404
    get_trigger = http.get(f"/api/v1/tasks/{UNREGISTERED_TASK}/trigger", headers=AUTH)
    assert get_trigger.status_code == 404
    # The control API wants the secret key before it says anything, even "not found".
    assert http.get("/_emulator/nothing-here").status_code == 401
    assert http.get("/_emulator/nothing-here", headers=AUTH).status_code == 404
    assert http.options("/anything/at/all").status_code == 204
