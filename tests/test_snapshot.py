"""The text so far in the first HTML of {% stream_viewer %}: read from the emulator while the
page renders, stopping when S2's ``tail`` says the read caught up (v2) or at the deadline (v1);
a finished run renders complete."""

from __future__ import annotations

import asyncio
import html as html_module
import re
from typing import Any

import pytest
from django.template import Context, Template

from tests.markdown_corpus import ANSWERS
from trigger_django import snapshot as snapshot_module
from trigger_django.client import StreamPart
from trigger_django.markdown import MarkdownStream, render_markdown

pytestmark = pytest.mark.django_db


def render(source: str, **context: Any) -> str:
    return Template("{% load trigger_django %}" + source).render(Context(context))


def append_text(emulator: Any, run_id: str, chunks: list[str]) -> None:
    for chunk in chunks:
        response = emulator.client.post(
            f"/realtime/v1/streams/{run_id}/self/default/append", content=chunk.encode()
        )
        response.raise_for_status()


def attribute(html: str, name: str) -> str | None:
    match = re.search(f' {name}="([^"]*)"', html)
    return None if match is None else html_module.unescape(match.group(1))


def output_of(html: str) -> str:
    match = re.search(
        r"data-trigger-output[^>]*>(.*?)</div>\n<p class=\"trigger-stream__announce", html, re.S
    )
    assert match is not None, html
    return match.group(1)


@pytest.fixture
def snapshot_settings(trigger_settings: Any) -> Any:
    trigger_settings.TRIGGER_DJANGO = {**trigger_settings.TRIGGER_DJANGO, "SNAPSHOT_DEADLINE": 5}
    return trigger_settings


def test_a_v2_read_stops_when_the_tail_says_it_caught_up(
    snapshot_settings: Any, emulator: Any
) -> None:
    run_id, _ = emulator.trigger("external-writer", {})
    append_text(emulator, run_id, ["one ", "two ", "three"])
    # A deadline far beyond the test's patience: only the caught-up signal ends the read early.
    parts, to_the_end = asyncio.run(snapshot_module._read(run_id, "default", None, 120))
    assert [p.chunk for p in parts] == ["one ", "two ", "three"]
    assert to_the_end is True
    # A stream nothing was written to yet starts with the caught-up ping.
    quiet, _ = emulator.trigger("external-writer", {})
    assert asyncio.run(snapshot_module._read(quiet, "default", None, 120)) == ([], True)


def test_a_live_run_renders_the_text_so_far_with_its_cursor(
    snapshot_settings: Any, emulator: Any
) -> None:
    run_id, _ = emulator.trigger("external-writer", {})
    chunks = ["Hello <b>", "world</b> & ", "<script>alert(1)</script>"]
    append_text(emulator, run_id, chunks)
    html = render("{% stream_viewer run_id %}", run_id=run_id)
    assert attribute(html, "data-state") == "connecting"
    assert attribute(html, "data-cursor") == "2"
    assert attribute(html, "data-cursor-i") == "0"
    assert attribute(html, "data-parts") == "3"
    assert attribute(html, "data-entry-before") is None  # v2: the cursor alone resumes
    # As text, escaped: the page holds the characters, not markup.
    assert output_of(html) == html_module.escape("".join(chunks), quote=True)
    assert "<script>" not in html
    assert "<noscript>" in html
    assert 'aria-busy="true"' in html


def test_a_live_markdown_viewer_renders_blocks_and_tail_as_the_hub_numbers_them(
    snapshot_settings: Any, emulator: Any
) -> None:
    run_id, _ = emulator.trigger("external-writer", {})
    chunks = ["# Title\n\nSome **bo", "ld** text\n\n- one\n", "- two\n\nAn open *emph"]
    append_text(emulator, run_id, chunks)
    html = render('{% stream_viewer run_id render="markdown" %}', run_id=run_id)
    expected = snapshot_module.snapshot_from_parts(
        [StreamPart(str(i), chunk, 0) for i, chunk in enumerate(chunks)],
        markdown=True,
        complete=False,
    )
    assert attribute(html, "data-md-blocks") == str(len(expected.blocks))
    assert attribute(html, "data-md-seq") == "3"
    assert len(expected.blocks) >= 2
    assert output_of(html) == (
        '<div class="trigger-md__blocks" data-trigger-md-blocks>'
        + "".join(expected.blocks)
        + '</div><div class="trigger-md__tail" data-trigger-md-tail>'
        + expected.tail
        + "</div>"
    )
    # The open emphasis is healed while the run goes on.
    assert "<em>emph</em>" in expected.tail


@pytest.mark.parametrize("mode", ["text", "markdown"])
def test_a_finished_run_renders_complete_with_its_whole_text(
    snapshot_settings: Any, emulator: Any, mode: str
) -> None:
    text = ANSWERS["overview"] + "\nThe end, with an open **bold"
    parts = re.findall(r"\S+\s*|\s+", text)
    run_id, _ = emulator.trigger("echo-parts", {"parts": parts, "delay_ms": 0})
    emulator.wait_for_status(run_id, "COMPLETED_SUCCESSFULLY", 30)
    html = render("{% stream_viewer run_id render=mode %}", run_id=run_id, mode=mode)
    assert attribute(html, "data-state") == "complete"
    assert 'aria-busy="false"' in html
    assert "<noscript>" not in html  # nothing more will come
    assert attribute(html, "data-parts") == str(len(parts))
    if mode == "text":
        assert output_of(html) == html_module.escape(text, quote=True)
    else:
        # The allow-list has no <div>: removing the two containers leaves the rendered HTML.
        blocks_and_tail = re.sub(r"</?div[^>]*>", "", output_of(html))
        assert blocks_and_tail == render_markdown(text)


def test_a_v1_stream_is_read_until_the_deadline_with_the_entry_before(
    snapshot_settings: Any, emulator_v1: Any
) -> None:
    snapshot_settings.TRIGGER_DJANGO = {
        **snapshot_settings.TRIGGER_DJANGO,
        "API_URL": emulator_v1.url,
        "SNAPSHOT_DEADLINE": 1.0,
    }
    run_id, _ = emulator_v1.trigger("external-writer", {})
    append_text(emulator_v1, run_id, ["first ", "second ", "third"])
    html = render("{% stream_viewer run_id %}", run_id=run_id)
    cursor, before = attribute(html, "data-cursor"), attribute(html, "data-entry-before")
    assert cursor is not None
    assert "-" in cursor
    assert before is not None
    assert before != cursor
    assert output_of(html) == "first second third"
    assert attribute(html, "data-state") == "connecting"


def test_no_read_inside_an_event_loop(snapshot_settings: Any) -> None:
    async def inside() -> Any:
        return snapshot_module.read_snapshot("run_abc", "default")

    assert asyncio.run(inside()) is None


@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_the_snapshots_markdown_is_the_hubs_state_after_the_same_parts(name: str) -> None:
    """The page's first HTML renders the text in one flush, the hub one flush per part: the
    frozen blocks (and so their numbering) and the tail must agree at every part."""
    parts = re.findall(r"\S+\s*|\s+", ANSWERS[name])
    stream = MarkdownStream()
    blocks: list[str] = []
    for index, part in enumerate(parts):
        stream.feed(part)
        update = stream.flush()
        blocks.extend(update.append)
        once = snapshot_module.snapshot_from_parts(
            [StreamPart(str(i), p, 0) for i, p in enumerate(parts[: index + 1])],
            markdown=True,
            complete=False,
        )
        assert (once.blocks, once.tail) == (blocks, update.tail), index
