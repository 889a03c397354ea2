"""The first HTML of {% run_viewer %}: every stream the run has at render time, read from the
emulator concurrently within one deadline, in the markup trigger-django.js builds for a stream
that appears live, with its cursor; a finished run whose streams were read to the end renders
complete (no socket), and without a <noscript> note."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.template import Context, Template
from django.utils.html import escape

from tests.test_templatetags import parse
from trigger_django import snapshot as snapshot_module
from trigger_django.runs import parts_html

pytestmark = pytest.mark.django_db

TICKET_RE = re.compile(r'data-ticket="([^"]+)"')
STREAMS_RE = re.compile(
    r'<div class="trigger-run__streams" data-trigger-streams>(.*?)</div>\n'
    r'<p class="trigger-run-status__error"',
    re.S,
)

TOOL_CALL = {"type": "tool-call", "toolName": "getWeather", "args": {"location": "<b>Rome</b>"}}
# AI SDK parts (written by a task: a raw append is a string part)
PARTS = [
    {"type": "text-delta", "textDelta": "Let me <check> "},
    {"type": "text-delta", "textDelta": "the weather."},
    TOOL_CALL,
    "After & done",
]
OPENAI = ["Let me <check> ", "the weather. ", "After & done"]
NOTES = ["a note <script>alert(1)</script>"]


@pytest.fixture
def snapshot_settings(trigger_settings: Any) -> Any:
    trigger_settings.TRIGGER_DJANGO = {
        **trigger_settings.TRIGGER_DJANGO,
        "SNAPSHOT_DEADLINE": 5,
        "RUN_STATE_DEADLINE": 5,
    }
    return trigger_settings


def render(source: str, **context: Any) -> str:
    return Template("{% load trigger_django %}" + source).render(Context(context))


def append(emulator: Any, run_id: str, key: str, chunks: list[Any]) -> None:
    for chunk in chunks:
        body = chunk if isinstance(chunk, str) else json.dumps(chunk)
        response = emulator.client.post(
            f"/realtime/v1/streams/{run_id}/self/{key}/append", content=body.encode()
        )
        response.raise_for_status()


def complete_run(emulator: Any, run_id: str) -> None:
    emulator.client.post(
        f"/_emulator/runs/{run_id}/complete", json={"output": None}
    ).raise_for_status()
    emulator.wait_for_status(run_id, "COMPLETED_SUCCESSFULLY", 30)


def streams_of(html: str) -> str:
    match = STREAMS_RE.search(html)
    assert match is not None, html
    return match.group(1)


def a_run_with_two_streams(emulator: Any) -> str:
    run_id, _ = emulator.trigger("external-writer", {})
    append(emulator, run_id, "openai", OPENAI)
    append(emulator, run_id, "notes", NOTES)
    return run_id


def section(key: str, state: str, cursor: str, parts: int, output: str) -> str:
    busy = "false" if state == "complete" else "true"
    return (
        f'<section class="trigger-stream trigger-run__stream" data-trigger-stream '
        f'data-state="{state}" data-ticket="TICKET" data-run-id="RUN" data-key="{key}" '
        f'data-render="parts" data-throttle-ms="16" data-timeout="60" data-cursor="{cursor}" '
        f'data-cursor-i="0" data-parts="{parts}">'
        f'<h2 class="trigger-run__stream-name">{key}</h2>'
        f'<div class="trigger-stream__output" data-trigger-output role="log" '
        f'aria-label="{key}" aria-busy="{busy}">{output}</div>'
        '<p class="trigger-stream__announce" data-trigger-announce role="status"></p>'
        '<p class="trigger-stream__error" data-trigger-error hidden></p></section>'
    )


TOOL_CALL_HTML = (
    '<details class="trigger-part" data-part-type="tool-call"><summary>tool-call</summary>'
    f"<pre>{escape(json.dumps(TOOL_CALL, indent=2))}</pre></details>"
)
PARTS_HTML = (
    '<p class="trigger-run__text" data-trigger-text>Let me &lt;check&gt; the weather.</p>'
    + TOOL_CALL_HTML
    + '<p class="trigger-run__text" data-trigger-text>After &amp; done</p>'
)
OPENAI_HTML = (
    '<p class="trigger-run__text" data-trigger-text>Let me &lt;check&gt; the weather. '
    "After &amp; done</p>"
)
NOTES_HTML = (
    '<p class="trigger-run__text" data-trigger-text>'
    "a note &lt;script&gt;alert(1)&lt;/script&gt;</p>"
)


def normalised(html: str, run_id: str) -> str:
    tickets = set(TICKET_RE.findall(html))
    assert len(tickets) == 1  # the sections subscribe with the run viewer's own ticket
    return TICKET_RE.sub('data-ticket="TICKET"', html).replace(run_id, "RUN")


def test_a_live_run_viewer_renders_every_stream_so_far_with_its_cursor(
    snapshot_settings: Any, emulator: Any
) -> None:
    run_id = a_run_with_two_streams(emulator)
    html = normalised(render("{% run_viewer run_id %}", run_id=run_id), run_id)
    assert streams_of(html) == section("openai", "connecting", "2", 3, OPENAI_HTML) + section(
        "notes", "connecting", "0", 1, NOTES_HTML
    )
    assert html.startswith(
        '<div class="trigger-run" id="trigger-run-RUN" data-trigger-live-run '
        'data-trigger-run-viewer data-state="connecting" data-ticket="TICKET" '
        'data-run-id="RUN" data-run-status="EXECUTING"'
    )
    assert html.endswith(
        '<noscript><p class="trigger-run__noscript">This run is still going: reload the page '
        "to see more.</p></noscript>\n</div>"
    )
    assert "<script>" not in html.replace("<noscript>", "")
    parse(html)


def test_a_finished_run_viewer_renders_complete_without_a_noscript_note(
    snapshot_settings: Any, emulator: Any
) -> None:
    run_id = a_run_with_two_streams(emulator)
    complete_run(emulator, run_id)
    html = normalised(render('{% run_viewer run_id id="agent" %}', run_id=run_id), run_id)
    assert html.startswith(
        '<div class="trigger-run" id="agent" data-trigger-live-run data-trigger-run-viewer '
        'data-state="complete" data-ticket="TICKET" data-run-id="RUN" '
        'data-run-status="COMPLETED"'
    )
    assert 'data-tone="success" aria-live="polite">Completed</span>' in html
    assert streams_of(html) == section("openai", "complete", "2", 3, OPENAI_HTML) + section(
        "notes", "complete", "0", 1, NOTES_HTML
    )
    assert "<noscript>" not in html
    parse(html)


def finished_run_of_parts(emulator: Any) -> str:
    run_id, _ = emulator.trigger("echo-parts", {"parts": PARTS, "key": "openai"})
    emulator.wait_for_status(run_id, "COMPLETED_SUCCESSFULLY", 30)
    return run_id


def test_object_parts_are_rendered_by_their_templates_text_parts_as_text(
    snapshot_settings: Any, emulator: Any
) -> None:
    run_id = finished_run_of_parts(emulator)
    html = normalised(render("{% run_viewer run_id %}", run_id=run_id), run_id)
    assert streams_of(html) == section("openai", "complete", "3", 4, PARTS_HTML)
    assert 'data-trigger-run-viewer data-state="complete"' in html
    assert "<b>" not in html


def test_part_templates_and_streams_choose_what_the_first_html_holds(
    snapshot_settings: Any, emulator: Any
) -> None:
    run_id = a_run_with_two_streams(emulator)
    html = render('{% run_viewer run_id streams="notes" %}', run_id=run_id)
    sections = streams_of(html)
    assert sections.count("<section") == 1
    assert 'data-key="notes"' in sections
    done = finished_run_of_parts(emulator)
    html = render('{% run_viewer run_id part_templates="weather/parts" %}', run_id=done)
    assert '<p class="weather-call">Looking up the weather in &lt;b&gt;Rome&lt;/b&gt;…</p>' in (
        streams_of(html)
    )


def test_a_finished_run_with_a_stream_not_read_stays_live(
    snapshot_settings: Any, emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = a_run_with_two_streams(emulator)
    complete_run(emulator, run_id)
    read = snapshot_module._read

    async def notes_fail(run_id: str, key: str, *args: Any, **kwargs: Any) -> Any:
        if key == "notes":
            raise RuntimeError("upstream went away")
        return await read(run_id, key, *args, **kwargs)

    monkeypatch.setattr(snapshot_module, "_read", notes_fail)
    html = normalised(render("{% run_viewer run_id %}", run_id=run_id), run_id)
    # The stream read is complete; the other is rendered empty, to be read by the socket from
    # its start, and so the run viewer is not complete either.
    assert 'data-trigger-run-viewer data-state="connecting"' in html
    assert streams_of(html) == section("openai", "complete", "2", 3, OPENAI_HTML) + (
        '<section class="trigger-stream trigger-run__stream" data-trigger-stream '
        'data-state="connecting" data-ticket="TICKET" data-run-id="RUN" data-key="notes" '
        'data-render="parts" data-throttle-ms="16" data-timeout="60">'
        '<h2 class="trigger-run__stream-name">notes</h2>'
        '<div class="trigger-stream__output" data-trigger-output role="log" '
        'aria-label="notes" aria-busy="true"></div>'
        '<p class="trigger-stream__announce" data-trigger-announce role="status"></p>'
        '<p class="trigger-stream__error" data-trigger-error hidden></p></section>'
    )


def test_the_streams_are_read_concurrently_within_one_deadline(
    snapshot_settings: Any, emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = a_run_with_two_streams(emulator)
    append(emulator, run_id, "third", ["3"])
    calls: list[Any] = []
    bounded = snapshot_module.bounded_sync
    read = snapshot_module._read
    in_flight = 0
    most_in_flight = 0
    deadlines: list[float] = []

    def counted(function: Any, *args: Any) -> Any:
        calls.append(function)
        return bounded(function, *args)

    async def overlapping(run_id: str, key: str, start: Any, deadline: float, **kw: Any) -> Any:
        nonlocal in_flight, most_in_flight
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        deadlines.append(deadline)
        try:
            return await read(run_id, key, start, deadline, **kw)
        finally:
            in_flight -= 1

    monkeypatch.setattr(snapshot_module, "bounded_sync", counted)
    monkeypatch.setattr(snapshot_module, "_read", overlapping)
    html = render("{% run_viewer run_id %}", run_id=run_id)
    assert streams_of(html).count("<section") == 3
    # One bounded call for the three streams (besides the run state's own).
    assert [f.__name__ for f in calls if f.__name__ != "_first_state"] == ["_read_all"]
    assert most_in_flight == 3  # all three reads at once
    assert deadlines == [5, 5, 5]  # sharing SNAPSHOT_DEADLINE, not one after another


def test_a_run_with_more_streams_than_the_cap_reads_only_the_first_ones(
    snapshot_settings: Any, emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = a_run_with_two_streams(emulator)
    append(emulator, run_id, "third", ["3"])
    read = snapshot_module._read
    keys: list[str] = []

    async def recorded(run_id: str, key: str, start: Any, deadline: float, **kw: Any) -> Any:
        keys.append(key)
        return await read(run_id, key, start, deadline, **kw)

    monkeypatch.setattr(snapshot_module, "MAX_SNAPSHOT_STREAMS", 2)
    monkeypatch.setattr(snapshot_module, "_read", recorded)
    html = render("{% run_viewer run_id %}", run_id=run_id)
    assert len(keys) == 2  # one upstream request per stream read: bounded per render
    assert streams_of(html).count("<section") == 3  # the third arrives on the socket
    assert "3</p>" not in streams_of(html)


def test_with_the_snapshot_off_the_streams_are_rendered_empty(
    snapshot_settings: Any, emulator: Any
) -> None:
    snapshot_settings.TRIGGER_DJANGO = {**snapshot_settings.TRIGGER_DJANGO, "SNAPSHOT_DEADLINE": 0}
    run_id = a_run_with_two_streams(emulator)
    complete_run(emulator, run_id)
    html = render("{% run_viewer run_id %}", run_id=run_id)
    sections = streams_of(html)
    assert sections.count('data-state="connecting"') == 2
    assert "data-cursor" not in sections
    assert "trigger-run__text" not in sections
    # The run has finished, but its text is not in the page: the socket brings it.
    assert 'data-trigger-run-viewer data-state="connecting"' in html


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ([], ""),
        (["a", "b"], '<p class="trigger-run__text" data-trigger-text>ab</p>'),
        (
            [{"type": "text-delta", "delta": "<i>"}, {"type": "text-delta"}],
            '<p class="trigger-run__text" data-trigger-text>&lt;i&gt;</p>',
        ),
        (
            [{"type": "step-start"}, "x"],
            '<details class="trigger-part" data-part-type="step-start"><summary>step-start'
            "</summary><pre>{\n  &quot;type&quot;: &quot;step-start&quot;\n}</pre></details>"
            '<p class="trigger-run__text" data-trigger-text>x</p>',
        ),
    ],
)
def test_parts_html_is_what_the_page_builds(chunks: list[Any], expected: str) -> None:
    assert parts_html(chunks) == expected


def test_a_v1_stream_carries_the_entry_before_its_cursor(
    snapshot_settings: Any, emulator_v1: Any
) -> None:
    snapshot_settings.TRIGGER_DJANGO = {
        **snapshot_settings.TRIGGER_DJANGO,
        "API_URL": emulator_v1.url,
        "SNAPSHOT_DEADLINE": 1.0,
    }
    run_id, _ = emulator_v1.trigger("external-writer", {})
    append(emulator_v1, run_id, "openai", ["first ", "second ", "third"])
    sections = streams_of(render("{% run_viewer run_id %}", run_id=run_id))
    cursor = re.search(r' data-cursor="([^"]+)"', sections)
    before = re.search(r' data-entry-before="([^"]+)"', sections)
    assert cursor is not None
    assert "-" in cursor.group(1)  # a Redis id
    assert before is not None
    assert before.group(1) != cursor.group(1)
    assert '<p class="trigger-run__text" data-trigger-text>first second third</p>' in sections
    assert 'data-state="connecting"' in sections
