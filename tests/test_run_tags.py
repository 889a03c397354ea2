"""{% run_status %} and {% run_viewer %}: exact HTML, the state at render time, signed options."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from django.template import Context, Template, TemplateSyntaxError

from tests.test_templatetags import parse
from trigger_django.client import Run
from trigger_django.runs import (
    fetch_run,
    progress_from_metadata,
    render_run_status,
    render_run_viewer,
    status_view,
)
from trigger_django.tickets import RUN_WIDE, load_ticket

TICKET_RE = re.compile(r'data-ticket="([^"]+)"')


@pytest.fixture(autouse=True)
def _no_render_time_fetch(settings: Any) -> None:
    # These tests have no upstream; the render-time fetch is tested against the emulator below.
    settings.TRIGGER_DJANGO = {**settings.TRIGGER_DJANGO, "RUN_STATE_DEADLINE": 0}


def render(source: str, **context: Any) -> str:
    return Template("{% load trigger_django %}" + source).render(Context(context))


def split_ticket(html: str) -> tuple[str, str]:
    match = TICKET_RE.search(html)
    assert match, html
    return TICKET_RE.sub('data-ticket="TICKET"', html), match.group(1)


def a_run(**fields: Any) -> Run:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    defaults: dict[str, Any] = {
        "id": "run_abc",
        "created_at": now,
        "updated_at": now,
        "task_identifier": "t",
        "status": "EXECUTING",
    }
    return Run(**{**defaults, **fields})


EXPECTED_STATUS = (
    '<div class="trigger-run-status" id="trigger-run-run_abc" data-trigger-live-run '
    'data-state="connecting" data-ticket="TICKET" data-run-id="run_abc" data-run-status="">\n'
    '<span class="trigger-run-status__badge" data-trigger-badge data-tone="pending" '
    'aria-live="polite">Loading…</span>\n'
    '<span class="trigger-run-status__progress" data-trigger-progress-wrap hidden>'
    '<progress data-trigger-progress max="1" value="0" '
    'aria-labelledby="trigger-run-run_abc-step">0%</progress> '
    '<span id="trigger-run-run_abc-step" data-trigger-step></span></span>\n'
    '<p class="trigger-run-status__error" data-trigger-error role="alert" hidden></p>\n'
    "</div>"
)


def test_run_status_exact_html_before_the_state_is_known() -> None:
    html, ticket = split_ticket(render('{% run_status "run_abc" %}'))
    assert html == EXPECTED_STATUS
    loaded = load_ticket(ticket)
    assert (loaded.run_id, loaded.key, loaded.part_templates) == ("run_abc", RUN_WIDE, None)


def test_run_status_renders_the_state_it_was_given() -> None:
    run = a_run(status="EXECUTING", metadata={"progress": 0.4, "step": "Searching"})
    html = render_run_status(user_pk=1, run_id="run_abc", run=run)
    assert 'data-run-status="EXECUTING"' in html
    assert 'data-tone="active" aria-live="polite">Executing</span>' in html
    assert 'data-trigger-progress-wrap><progress data-trigger-progress max="1" value="0.4"' in html
    assert ">40%</progress>" in html
    assert "data-trigger-step>Searching 40%</span>" in html
    parse(html)


def test_a_failed_run_shows_its_error_as_text() -> None:
    from trigger_django.client._runs import RunError

    run = a_run(status="FAILED", error=RunError(message="<b>boom</b>"))
    html = render_run_status(user_pk=1, run_id="run_abc", run=run)
    assert 'data-tone="failure" aria-live="polite">Failed</span>' in html
    assert 'role="alert">&lt;b&gt;boom&lt;/b&gt;</p>' in html


def test_run_viewer_signs_its_part_templates_and_streams() -> None:
    html, ticket = split_ticket(
        render(
            '{% run_viewer "run_abc" streams="openai,notes" part_templates="weather/parts" '
            'throttle_ms=100 id="agent" %}'
        )
    )
    assert html.startswith(
        '<div class="trigger-run" id="agent" data-trigger-live-run data-trigger-run-viewer '
        'data-state="connecting" data-ticket="TICKET" data-run-id="run_abc" data-run-status="" '
        'data-streams="openai,notes" data-throttle-ms="100" data-timeout="60">'
    )
    assert '<div class="trigger-run__streams" data-trigger-streams></div>' in html
    loaded = load_ticket(ticket)
    assert loaded.key == RUN_WIDE
    assert loaded.part_templates == {RUN_WIDE: "weather/parts"}
    parse(html)


def test_run_viewer_part_templates_by_stream() -> None:
    html = render(
        "{% run_viewer run_id part_templates=templates %}",
        run_id="run_abc",
        templates={"openai": "weather/parts"},
    )
    loaded = load_ticket(split_ticket(html)[1])
    assert loaded.part_templates_for("openai") == "weather/parts"
    assert loaded.part_templates_for("other") == "trigger_django/parts"


def test_metadata_is_rendered_as_text() -> None:
    run = a_run(metadata={"note": "<script>alert(1)</script>"})
    html = render_run_viewer(user_pk=1, run_id="run_abc", run=run)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{% run_status newline_id %}", "Invalid run id"),
        ('{% run_viewer "run_abc" part_templates="../secrets" %}', "template directory"),
        ('{% run_viewer "run_abc" streams="a/b" %}', "Invalid stream key"),
        ('{% run_viewer "run_abc" timeout=0 %}', "between 1 and 600"),
    ],
)
def test_bad_arguments_are_template_errors(source: str, message: str) -> None:
    with pytest.raises(TemplateSyntaxError, match=message):
        render(source, newline_id="run_abc\n")


@pytest.mark.parametrize(
    ("status", "label", "tone", "finished"),
    [
        ("QUEUED", "Queued", "pending", False),
        ("EXECUTING", "Executing", "active", False),
        ("WAITING", "Waiting", "waiting", False),
        ("COMPLETED", "Completed", "success", True),
        ("FAILED", "Failed", "failure", True),
        ("CANCELED", "Cancelled", "failure", True),
        ("SOMETHING_NEW", "Something new", "pending", False),
    ],
)
def test_status_words(status: str, label: str, tone: str, finished: bool) -> None:
    view = status_view(status)
    assert (view.label, view.tone, view.finished) == (label, tone, finished)


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"progress": 0.4, "step": "Searching"}, (0.4, "Searching", 40)),
        ({"progress": 2}, (1.0, None, 100)),
        ({"progress": -1, "step": 3}, (0.0, None, 0)),
        ({"progress": "half"}, None),
        ({"progress": True}, None),
        ({"progress": float("nan")}, None),
        ("not a dict", None),
    ],
)
def test_progress_shape(metadata: Any, expected: Any) -> None:
    progress = progress_from_metadata(metadata)
    if expected is None:
        assert progress is None
    else:
        assert progress is not None
        assert (progress.value, progress.step, progress.percent) == expected


@pytest.mark.django_db
def test_the_state_at_render_time_comes_from_trigger_dev(
    trigger_settings: Any, emulator: Any
) -> None:
    trigger_settings.TRIGGER_DJANGO = {**trigger_settings.TRIGGER_DJANGO, "RUN_STATE_DEADLINE": 5}
    run_id, _ = emulator.trigger("demo-weather-agent", {"city": "Rome", "tokens_per_second": 500})
    emulator.wait_for_status(run_id, "COMPLETED_SUCCESSFULLY", 30)
    html = render("{% run_status run_id %}", run_id=run_id)
    assert 'data-run-status="COMPLETED"' in html and ">Completed</span>" in html
    run = fetch_run(run_id)
    assert run is not None and run.is_completed


def test_no_fetch_from_async_code() -> None:
    import asyncio

    async def inside_a_loop() -> Any:
        return fetch_run("run_abc", deadline=5)

    assert asyncio.run(inside_a_loop()) is None
