"""Defined streams: streams.define / streams.input, their type checks, and use in tags and code."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Literal, TypedDict

import pytest
from django import forms
from django.core.exceptions import ImproperlyConfigured
from django.template import Context, Template
from django.test import RequestFactory

from trigger_django import streams
from trigger_django.forms import ApprovalForm
from trigger_django.testing import Script, open_stream_socket
from trigger_django.upstream import aclose_http_clients

STREAMS_LOGGER = "trigger_django.streams"


class Progress(TypedDict):
    step: int
    label: str


@dataclass
class Token:
    text: str
    score: float = 0.0


@dataclass
class Message:
    role: Literal["user", "assistant"]
    tokens: list[Token]


class RefundForm(forms.Form):
    amount = forms.DecimalField(max_digits=8, decimal_places=2)


# -- type checks ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("declared", "chunk", "fits"),
    [
        (str, "a", True),
        (str, 1, False),
        (int, 3, True),
        (int, True, False),
        (int, 1.5, False),
        (float, 2, True),
        (bool, False, True),
        (list[int], [1, 2], True),
        (list[int], [1, "2"], False),
        (dict[str, int], {"a": 1}, True),
        (dict[str, int], {"a": "x"}, False),
        (str | None, None, True),
        (str | None, 4, False),
        (Literal["a", "b"], "b", True),
        (Literal["a", "b"], "c", False),
        (Progress, {"step": 1, "label": "x"}, True),
        (Progress, {"step": 1}, False),
        (Progress, {"step": 1, "label": "x", "extra": 0}, False),
        (Progress, "x", False),
        (Token, {"text": "hi"}, True),
        (Token, {"text": "hi", "score": "high"}, False),
        (Message, {"role": "user", "tokens": [{"text": "a"}]}, True),
        (Message, {"role": "bot", "tokens": []}, False),
    ],
)
def test_a_chunk_fits_its_declared_type_or_says_why_not(declared, chunk, fits):
    stream = streams.OutputStream("typed", declared)
    reason = stream.check(chunk)
    assert (reason is None) is fits, reason
    if not fits:
        assert "chunk" in reason


def test_parse_builds_dataclasses_and_leaves_misfits_raw():
    stream = streams.OutputStream("msgs", Message)
    parsed = stream.parse({"role": "assistant", "tokens": [{"text": "a", "score": 1}]})
    assert parsed == Message("assistant", [Token("a", 1)])
    raw = {"role": "nobody"}
    assert stream.parse(raw) is raw


def test_an_unsupported_type_is_refused_when_defined():
    with pytest.raises(TypeError, match="cannot check chunks against"):
        streams.define("bad-type", type=set)


def test_a_bad_stream_id_is_refused_when_defined():
    with pytest.raises(ValueError, match="Invalid stream key"):
        streams.define("a/b", type=str)


def test_defining_again_returns_the_same_stream_unless_the_type_differs():
    first = streams.define("twice", type=str)
    assert streams.define("twice", type=str) is first
    assert streams.output_stream("twice") is first
    with pytest.raises(ImproperlyConfigured, match="already defined with type"):
        streams.define("twice", type=int)


def test_input_streams_register_with_their_form():
    refund = streams.input("refund", form=RefundForm)
    assert streams.input_stream("refund") is refund
    assert streams.input("refund", form=RefundForm) is refund
    with pytest.raises(ImproperlyConfigured, match="already defined with form"):
        streams.input("refund", form=ApprovalForm)
    with pytest.raises(TypeError, match=r"django\.forms\.Form subclass"):
        streams.InputStream("x", form=dict)  # type: ignore[arg-type]


# -- in the tags ------------------------------------------------------------------------------


def test_defined_streams_work_in_both_tags(rf, django_user_model, db):
    user = django_user_model.objects.create(username="tag-user")
    request = rf.get("/runs/run_1/")
    request.user = user
    template = Template(
        "{% load trigger_django %}"
        "{% stream_viewer answer 'run_1' %}{% approval_form 'run_1' refund %}"
    )
    html = template.render(
        Context(
            {
                "request": request,
                "answer": streams.define("tag-answer", type=str),
                "refund": streams.input("tag-refund", form=RefundForm),
            }
        )
    )
    assert 'data-key="tag-answer"' in html
    assert "/trigger/runs/run_1/input/tag-refund/" in html
    assert 'name="amount"' in html


# -- reading in Python ------------------------------------------------------------------------


def test_read_from_sync_code_delivers_misfits_raw_and_logs_once(trigger_settings, emulator, caplog):
    words = streams.define("read-words", type=str)
    run_id, _ = emulator.trigger_script(Script(key="read-words").write("a", 2, "b", {"c": 3}))
    with caplog.at_level(logging.WARNING, logger=STREAMS_LOGGER):
        chunks = words.read(run_id, timeout_seconds=1)
    assert chunks == ["a", 2, "b", {"c": 3}]
    warnings = [r for r in caplog.records if r.name == STREAMS_LOGGER]
    assert len(warnings) == 1
    assert "read-words" in warnings[0].getMessage()
    assert "not a string" in warnings[0].getMessage()


def test_read_stops_at_limit(trigger_settings, emulator):
    numbers = streams.define("read-limit", type=int)
    run_id, _ = emulator.trigger_script(Script(key="read-limit").write(1, 2, 3).hold())
    assert numbers.read(run_id, limit=2, timeout_seconds=5) == [1, 2]


async def test_aread_yields_dataclasses_as_they_arrive(trigger_settings, emulator):
    tokens = streams.define("aread-tokens", type=Token)
    script = Script(key="aread-tokens").write({"text": "a"}, {"text": "b", "score": 0.5})
    run_id, _ = await asyncio.to_thread(emulator.trigger_script, script)
    try:
        received = [token async for token in tokens.aread(run_id, timeout_seconds=1)]
    finally:
        await aclose_http_clients()
    assert received == [Token("a"), Token("b", 0.5)]


# -- the consumer checks, and delivers everything ---------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_the_consumer_delivers_a_misfit_raw_and_logs_it_once(
    trigger_settings, emulator, django_user_model, caplog
):
    streams.define("consumer-words", type=str)
    user = await django_user_model.objects.acreate(username="reader")
    script = Script(key="consumer-words").write("one", 2, "three", 4)
    run_id, _ = await asyncio.to_thread(emulator.trigger_script, script)
    with caplog.at_level(logging.WARNING, logger=STREAMS_LOGGER):
        async with open_stream_socket(user) as socket:
            sub = await socket.subscribe(run_id, "consumer-words")
            read = await socket.read(sub)
    assert read.chunks == ["one", 2, "three", 4]
    assert read.end == {"type": "complete", "sub": sub}
    warnings = [r for r in caplog.records if r.name == STREAMS_LOGGER]
    assert len(warnings) == 1
    assert run_id in warnings[0].getMessage()


@pytest.mark.django_db(transaction=True)
async def test_fitting_chunks_log_nothing(trigger_settings, emulator, django_user_model, caplog):
    streams.define("consumer-fits", type=str)
    user = await django_user_model.objects.acreate(username="reader2")
    run_id, _ = await asyncio.to_thread(
        emulator.trigger_script, Script(key="consumer-fits").write("a", "b")
    )
    with caplog.at_level(logging.WARNING, logger=STREAMS_LOGGER):
        async with open_stream_socket(user) as socket:
            read = await socket.read(await socket.subscribe(run_id, "consumer-fits"))
    assert read.text == "ab"
    assert [r for r in caplog.records if r.name == STREAMS_LOGGER] == []


# -- sending ----------------------------------------------------------------------------------


def test_send_validates_with_the_form_and_reaches_the_run(trigger_settings, emulator):
    approval = streams.input("send-approval", form=ApprovalForm)
    script = Script().wait_for_input("send-approval", timeout=10, echo_to="default")
    run_id, _ = emulator.trigger_script(script)
    assert approval.send(run_id, {"approved": "true", "reviewer": "ada"}) == {"ok": True}
    run = emulator.wait_for_status(run_id, "COMPLETED_SUCCESSFULLY")
    assert run["inputs"][0]["data"] == {"approved": True, "reviewer": "ada"}


def test_invalid_input_is_refused_before_anything_is_sent(trigger_settings, emulator):
    approval = streams.input("send-invalid", form=ApprovalForm)
    run_id, _ = emulator.trigger_script(Script().hold())
    with pytest.raises(streams.InvalidInput, match="approved: Choose approve or reject") as error:
        approval.send(run_id, {"approved": "maybe"})
    assert "approved" in error.value.errors
    assert emulator.run(run_id)["inputs"] == []


def test_with_a_request_the_server_fields_come_from_the_user(trigger_settings, emulator, db):
    from django.contrib.auth.models import User

    approval = streams.input("send-request", form=ApprovalForm)
    request = RequestFactory().post("/")
    request.user = User.objects.create(username="grace")
    payload = approval.payload({"approved": "false", "reviewer": "mallory"}, request=request)
    assert payload == {"approved": False, "reviewer": "grace"}


async def test_asend_from_async_code(trigger_settings, emulator):
    plain = streams.input("asend-plain")
    run_id, _ = await asyncio.to_thread(emulator.trigger_script, Script().hold())
    try:
        await plain.asend(run_id, {"anything": [1, 2]})
    finally:
        await aclose_http_clients()
    run = await asyncio.to_thread(emulator.run, run_id)
    assert run["inputs"][0]["data"] == {"anything": [1, 2]}
