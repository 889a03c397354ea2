from __future__ import annotations

import pytest

from trigger_django.parts import RenderedPart, part_text, render_part, validate_part_prefix


@pytest.mark.parametrize(
    ("chunk", "text"),
    [
        ("plain", "plain"),
        ({"type": "text-delta", "textDelta": "v4 "}, "v4 "),
        ({"type": "text-delta", "id": "t1", "delta": "v5 "}, "v5 "),
        ({"type": "text-delta", "text": "alt"}, "alt"),
        ({"type": "text-delta"}, ""),
        ({"type": "tool-call"}, None),
        (42, None),
    ],
)
def test_part_text(chunk: object, text: str | None) -> None:
    assert part_text(chunk) == text


def test_text_delta_renders_as_text_not_html() -> None:
    assert render_part({"type": "text-delta", "textDelta": "<b>x</b>"}) == RenderedPart(
        "text", "<b>x</b>"
    )


def test_weather_example_as_two_templates() -> None:
    call = {"type": "tool-call", "toolName": "getWeather", "args": {"location": "Paris"}}
    result = {**call, "type": "tool-result", "result": {"temperature": 21}}
    assert render_part(call, prefix="weather/parts") == RenderedPart(
        "html", '<p class="weather-call">Looking up the weather in Paris…</p>'
    )
    assert render_part(result, prefix="weather/parts") == RenderedPart(
        "html", '<p class="weather-result">The weather in Paris is 21 degrees.</p>'
    )


def test_hostile_tool_arguments_are_escaped() -> None:
    call = {
        "type": "tool-call",
        "toolName": "getWeather",
        "args": {"location": '<img src=x onerror="alert(1)">'},
    }
    rendered = render_part(call, prefix="weather/parts")
    assert "<img" not in rendered.content
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in rendered.content


def test_unknown_type_falls_back_to_the_json_default() -> None:
    rendered = render_part({"type": "reasoning", "text": "<script>"}, prefix="weather/parts")
    assert rendered.kind == "html"
    assert rendered.content.startswith('<details class="trigger-part" data-part-type="reasoning">')
    assert "&lt;script&gt;" in rendered.content
    assert "<script>" not in rendered.content


@pytest.mark.parametrize("part_type", ["../../secret", "a/b", "", None, 7, "x" * 65])
def test_part_types_never_become_paths(part_type: object) -> None:
    rendered = render_part({"type": part_type}, prefix="weather/parts")
    assert rendered.content.startswith('<details class="trigger-part"')


@pytest.mark.parametrize("prefix", ["../x", "/abs", "a b", "", None])
def test_invalid_prefixes(prefix: object) -> None:
    with pytest.raises(ValueError, match="template directory"):
        validate_part_prefix(prefix)


def test_valid_prefix() -> None:
    assert validate_part_prefix("weather/parts/") == "weather/parts"
