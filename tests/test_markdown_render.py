"""The server-side streaming markdown renderer (trigger_django.markdown): frozen blocks plus the
final tail add up to markdown-it-py's rendering of the whole text, sanitised, whatever the
split points; hostile markdown never yields executable HTML; the open tail is healed."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from tests.markdown_corpus import ANSWERS
from trigger_django.markdown import (
    ALLOWED_ATTRIBUTES,
    ALLOWED_TAGS,
    MarkdownStream,
    RenderUpdate,
    render_markdown,
    sanitize_html,
)

REFERENCE = MarkdownIt("gfm-like", {"html": False})


def expected_html(text: str) -> str:
    """markdown-it-py's rendering of the whole text, sanitised: what a stream must add up to."""
    return sanitize_html(REFERENCE.render(text))


def stream_in(pieces: list[str]) -> tuple[list[RenderUpdate], RenderUpdate]:
    stream = MarkdownStream()
    updates = []
    for piece in pieces:
        stream.feed(piece)
        updates.append(stream.flush())
    return updates, stream.finish()


def frozen_html(updates: list[RenderUpdate], final: RenderUpdate) -> str:
    return "".join(html for update in [*updates, final] for html in update.append) + final.tail


# -- equality with the whole-text rendering ------------------------------------------------


def test_render_markdown_is_the_sanitised_markdown_it_rendering() -> None:
    for text in ANSWERS.values():
        assert render_markdown(text) == expected_html(text)


@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_every_split_point_adds_up_to_the_whole_rendering(name: str) -> None:
    text = ANSWERS[name]
    expected = expected_html(text)
    for split in range(len(text) + 1):
        updates, final = stream_in([text[:split], text[split:]])
        assert frozen_html(updates, final) == expected, f"split at {split}: {text[:split]!r}"


@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_token_by_token_frozen_blocks_are_always_a_prefix_of_the_result(name: str) -> None:
    text = ANSWERS[name]
    expected = expected_html(text)
    stream = MarkdownStream()
    frozen = ""
    for index, char in enumerate(text):
        stream.feed(char)
        update = stream.flush()
        frozen += "".join(update.append)
        assert expected.startswith(frozen), f"after {index + 1} characters: {text[: index + 1]!r}"
    final = stream.finish()
    assert frozen + "".join(final.append) + final.tail == expected
    assert final.tail == ""


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(sorted(ANSWERS)),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=40),
)
def test_random_chunking_of_the_corpus(name: str, cuts: list[int]) -> None:
    text = ANSWERS[name]
    points = sorted({cut % (len(text) + 1) for cut in cuts})
    pieces = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    updates, final = stream_in(pieces)
    assert frozen_html(updates, final) == expected_html(text)


# Pieces whose meaning depends on what follows: markers, fences, tables, definitions (with titles
# that may continue on the next line), lazy lines, indentation, line endings.
PIECES = [
    "- ", "* ", "1. ", "2) ", "10. ", "> ", "  - ", "```", "~~~", "   ```", "|", " | ",
    "|-|-|", ":--", "a|b\n-|-\n", "---", "===", "#", "## ", "[a]", "[b]", "[a][b]", "[*a*]",
    "[a]: /u\n", "[a]:\n/u\n", "'title'\n", "(", ")", "](", "![", "\n", "\n", "\n\n", "\n  ",
    "\n    code", "  ", "    ", "\t", "*", "**", "_", "~~", "`", "``", "\\", "text", "word",
    "1\n", "http://x.y", "www.a.b", "<a>", "&amp;", "\r\n", "\r", "'", '"',
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(st.sampled_from(PIECES), min_size=1, max_size=40),
    sizes=st.lists(st.sampled_from([1, 1, 2, 3, 7]), min_size=1, max_size=8),
)
def test_generated_markdown_streams_add_up(pieces: list[str], sizes: list[int]) -> None:
    text = "".join(pieces)
    chunks = []
    position = 0
    while position < len(text):
        size = sizes[len(chunks) % len(sizes)]
        chunks.append(text[position : position + size])
        position += size
    updates, final = stream_in(chunks)
    expected = expected_html(text)
    frozen = ""
    for update in updates:
        frozen += "".join(update.append)
        assert expected.startswith(frozen)
    assert frozen_html(updates, final) == expected


# -- what gets frozen, and when ------------------------------------------------------------


def test_blocks_freeze_as_the_answer_grows_and_the_open_text_stays_small() -> None:
    section = ANSWERS["overview"]
    stream = MarkdownStream()
    appended = 0
    longest_open = 0
    for repeat in range(30):
        for start in range(0, len(section), 20):
            stream.feed(section[start : start + 20])
            appended += len(stream.flush().append)
            longest_open = max(longest_open, len(stream.pending_text))
        assert appended >= 7 * repeat, "blocks should be frozen as they complete"
    assert longest_open < len(section), "the open tail should hold the open block, not the answer"
    assert len(stream.text) == 30 * len(section)


def freeze_after(*deltas: str) -> list[str]:
    stream = MarkdownStream()
    appended: list[str] = []
    for delta in deltas:
        stream.feed(delta)
        appended += stream.flush().append
    return appended


def test_a_paragraph_waits_for_a_possible_setext_underline() -> None:
    assert freeze_after("Title\n") == []
    assert freeze_after("Title\n", "===\n", "\nNext\n") == ["<h1>Title</h1>\n"]


def test_a_list_stays_open_across_a_blank_line() -> None:
    assert freeze_after("- a\n\n") == []
    # The next item makes it one loose list, so nothing could have been frozen before.
    assert freeze_after("- a\n\n", "- b\n\n", "After\n") == [
        "<ul>\n<li>\n<p>a</p>\n</li>\n<li>\n<p>b</p>\n</li>\n</ul>\n"
    ]


def test_a_paragraph_may_still_become_a_table_header() -> None:
    assert freeze_after("Intro\n\na | b\n") == ["<p>Intro</p>\n"]
    appended = freeze_after("Intro\n\na | b\n", "--|--\n", "1 | 2\n\nEnd\n")
    assert appended[1].startswith("<table>")


def test_the_last_line_must_be_complete_before_it_closes_a_block() -> None:
    # "2" may still become "2. b", continuing the ordered list.
    assert freeze_after("1. a\n\n2") == []
    assert len(freeze_after("1. a\n\n2 apples\n")) == 1


def test_a_lazy_continuation_keeps_a_quote_open() -> None:
    assert freeze_after("> quoted\n", "lazy\n") == []
    assert freeze_after("> quoted\n", "lazy\n", "\nNext\n") == [
        "<blockquote>\n<p>quoted\nlazy</p>\n</blockquote>\n"
    ]


def test_an_unresolved_label_waits_for_a_later_definition() -> None:
    stream = MarkdownStream()
    stream.feed("See [docs] now.\n\nMore text.\n\nAnd more.\n\n")
    assert stream.flush().append == []
    stream.feed("[docs]: https://example.com/docs\n")
    final = stream.finish()
    assert final.append[0] == (
        '<p>See <a href="https://example.com/docs" rel="noopener noreferrer">docs</a> now.</p>\n'
    )


def test_a_definition_before_a_block_waits_for_its_title() -> None:
    # The "(" line may be the start of a title in parentheses spanning the next lines.
    assert freeze_after("[a]: /u\n    (\n[a]\n") == []
    text = "[a]: /u\n    (\n[a]\n) \n\nEnd\n"
    updates, final = stream_in(list(text))
    assert frozen_html(updates, final) == expected_html(text) == "<p>End</p>\n"


def test_definitions_in_frozen_text_resolve_later_links() -> None:
    stream = MarkdownStream()
    stream.feed("[home]: https://example.com/\n\nFirst.\n\nSecond.\n\n")
    assert stream.flush().append == ["<p>First.</p>\n"]
    stream.feed("Go [home].")
    assert stream.flush().tail == (
        '<p>Second.</p>\n<p>Go <a href="https://example.com/" rel="noopener noreferrer">'
        "home</a>.</p>\n"
    )


# -- healing the open tail -----------------------------------------------------------------

HEALED = [
    ("Some **bold", "<p>Some <strong>bold</strong></p>\n"),
    ("Some *italic", "<p>Some <em>italic</em></p>\n"),
    ("Some __bold", "<p>Some <strong>bold</strong></p>\n"),
    ("Some _italic", "<p>Some <em>italic</em></p>\n"),
    ("***both", "<p><em><strong>both</strong></em></p>\n"),
    ("**bold and *italic", "<p><strong>bold and <em>italic</em></strong></p>\n"),
    ("~~gone", "<p><s>gone</s></p>\n"),
    ("Run `pip inst", "<p>Run <code>pip inst</code></p>\n"),
    ("**Run `pip", "<p><strong>Run <code>pip</code></strong></p>\n"),
    ("Run `", "<p>Run</p>\n"),
    ("hello **", "<p>hello</p>\n"),
    ("see [the docs](https://exa", "<p>see the docs</p>\n"),
    ("see [the do", "<p>see the do</p>\n"),
    ("see ![logo](https://example.com/lo", "<p>see</p>\n"),
    ("snake_case_name and 2 * 3", "<p>snake_case_name and 2 * 3</p>\n"),
    ("- item **bold", "<ul>\n<li>item <strong>bold</strong></li>\n</ul>\n"),
    ("| a | b |\n|---|---|\n| 1 | **2", "<td><strong>2</strong></td>"),
    ("```py\nx = 1\n``", '<pre><code class="language-py">x = 1\n</code></pre>\n'),
    ("```py\nx = **1", '<pre><code class="language-py">x = **1</code></pre>\n'),
    ("Title\n-", "<p>Title</p>\n"),
    ("Title\n==", "<p>Title</p>\n"),
    ("Para\n\n- ", "<p>Para</p>\n"),
    ("Para\n\n#", "<p>Para</p>\n"),
    ("Para\n\n1.", "<p>Para</p>\n"),
    ("**closed paragraph\n\n", "<p>**closed paragraph</p>\n"),
]


@pytest.mark.parametrize(("partial", "tail"), HEALED)
def test_the_open_tail_is_healed_mid_stream(partial: str, tail: str) -> None:
    stream = MarkdownStream()
    stream.feed(partial)
    update = stream.flush()
    assert tail in "".join(update.append) + update.tail


def test_finish_renders_as_written_without_healing() -> None:
    stream = MarkdownStream()
    stream.feed("**bold and [link](https://exa")
    assert stream.flush().tail == "<p><strong>bold and link</strong></p>\n"
    assert stream.finish() == RenderUpdate(
        [
            '<p>**bold and [link](<a href="https://exa" rel="noopener noreferrer">https://exa</a>'
            "</p>\n"
        ],
        "",
    )


# -- hostile markdown ----------------------------------------------------------------------

HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '<a href="javascript:alert(1)">x</a>',
    "[x](javascript:alert(1))",
    "[x](JaVaScRiPt:alert(1))",
    "[x](java\tscript:alert(1))",
    "[x](&#106;avascript:alert(1))",
    "[x](vbscript:msgbox(1))",
    "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "![x](data:image/png;base64,iVBORw0KGgo=)",
    "![x](javascript:alert(1))",
    '![x](https://example.com/x.png "onerror=alert(1)")',
    "<javascript:alert(1)>",
    "[x]: javascript:alert(1)\n\n[x]",
    "<iframe src=https://example.com></iframe>",
    "<style>*{display:none}</style>",
    '<div onclick="alert(1)">x</div>',
    "<svg onload=alert(1)>",
    "```\n</code></pre><script>alert(1)</script>\n```",
    "`<script>alert(1)</script>`",
    "| <b onmouseover=alert(1)>x</b> | y |\n|---|---|\n| 1 | 2 |",
    '[x](https://example.com/"onmouseover="alert(1))',
    "<!-- <script>alert(1)</script> -->",
    "**<img src=x onerror=alert(1)>",
    "[click](javascript:alert(1",
]


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, attrs))


def assert_inert(html: str) -> None:
    parser = _Elements()
    parser.feed(html)
    parser.close()
    for tag, attrs in parser.elements:
        assert tag in ALLOWED_TAGS, f"<{tag}> in {html!r}"
        for name, value in attrs:
            allowed = ALLOWED_ATTRIBUTES.get(tag, set()) | ({"rel"} if tag == "a" else set())
            assert name in allowed, f"{name} on <{tag}> in {html!r}"
            if name in {"href", "src"}:
                scheme = urlsplit(value or "").scheme.lower()
                assert scheme in {"", "http", "https", "mailto"}, f"{value!r} in {html!r}"
            if name == "style":
                assert value is not None
                assert value.replace(" ", "").startswith("text-align:"), value
        if tag == "a":
            assert ("rel", "noopener noreferrer") in attrs


@pytest.mark.parametrize("source", HOSTILE)
def test_hostile_markdown_never_yields_executable_html(source: str) -> None:
    assert_inert(render_markdown(source))
    stream = MarkdownStream()
    for char in source:
        stream.feed(char)
        update = stream.flush()
        assert_inert("".join(update.append) + update.tail)
    assert_inert("".join(stream.finish().append))


def test_raw_html_is_shown_as_text() -> None:
    assert render_markdown("<b>hi</b>") == "<p>&lt;b&gt;hi&lt;/b&gt;</p>\n"


def test_links_get_rel_noopener_and_bare_urls_are_linked() -> None:
    assert render_markdown("Go to www.example.com now") == (
        '<p>Go to <a href="http://www.example.com" rel="noopener noreferrer">www.example.com</a>'
        " now</p>\n"
    )


# -- the API -------------------------------------------------------------------------------


def test_feed_rejects_non_text_and_feeding_after_finish() -> None:
    stream = MarkdownStream()
    with pytest.raises(TypeError, match=r"takes text \(str\), not bytes"):
        stream.feed(b"abc")  # type: ignore[arg-type]
    stream.feed("kept")
    stream.finish()
    with pytest.raises(RuntimeError, match="after finish"):
        stream.feed("more")
    assert stream.text == "kept"


def test_a_crlf_split_across_deltas_is_one_line_break() -> None:
    updates, final = stream_in(["para\r", "\ncontinued\r", "\r\n", "next\r"])
    assert frozen_html(updates, final) == expected_html("para\r\ncontinued\r\r\nnext\r")


def test_flush_without_new_text_repeats_the_tail_and_appends_nothing() -> None:
    stream = MarkdownStream()
    stream.feed("One\n\nTwo")
    # "Two" is on an unfinished line: it could still become anything, "One" stays open.
    assert stream.flush() == RenderUpdate([], "<p>One</p>\n<p>Two</p>\n")
    stream.feed("\n")
    first = stream.flush()
    assert first == RenderUpdate(["<p>One</p>\n"], "<p>Two</p>\n")
    assert stream.flush() == RenderUpdate([], "<p>Two</p>\n")
    assert stream.finish() == RenderUpdate(["<p>Two</p>\n"], "")
    assert stream.flush() == RenderUpdate()
