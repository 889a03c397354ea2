"""{% stream_viewer render="markdown" %} in Chromium: the markdown is rendered and sanitised on
the server (markdown-it-py + nh3), once per stream; the page inserts only that HTML. The allowed
elements, and nothing else."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import expect

from bench.stack import Daphne
from tests.markdown_corpus import ANSWERS
from trigger_django.client import StreamPart
from trigger_django.markdown import render_markdown
from trigger_django.snapshot import snapshot_from_parts
from trigger_django.tickets import make_ticket

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

REL = 'rel="noopener noreferrer"'

# Split mid-heading, mid-emphasis, mid-**, mid-code span, mid-list item, mid-fence, mid-link.
DOC_PARTS = [
    "# Str",
    "eaming *mark",
    "down*\n\nSome **bo",
    "ld** text, `inline ",
    "code` and _em_.\n\n- one\n",
    "- t",
    "wo\n\n1. first\n2. sec",
    "ond\n\n> a quo",
    "te\n\n---\n\n``",
    "`py\nx = 1 < 2\n",
    "```\n\nSee [the do",
    "cs](https://example.com/a?b=1&c=2), [a page](/runs/) or [mail](mailto:a@example.com).",
]
DOC_HTML = (
    "<h1>Streaming <em>markdown</em></h1>\n"
    "<p>Some <strong>bold</strong> text, <code>inline code</code> and <em>em</em>.</p>\n"
    "<ul>\n<li>one</li>\n<li>two</li>\n</ul>\n"
    "<ol>\n<li>first</li>\n<li>second</li>\n</ol>\n"
    "<blockquote>\n<p>a quote</p>\n</blockquote>\n"
    "<hr>\n"
    '<pre><code class="language-py">x = 1 &lt; 2\n</code></pre>\n'
    f'<p>See <a href="https://example.com/a?b=1&amp;c=2" {REL}>the docs</a>, '
    f'<a href="/runs/" {REL}>a page</a> or <a href="mailto:a@example.com" {REL}>mail</a>.</p>\n'
)
# A stream that stops mid-construct: at its end the text is rendered as written (unclosed ** and
# ` stay text; an unclosed fence is a code block to the end).
PARTIAL_PARTS = ["Text with **bol", "d and `co", "de\n\nNext *is* fine.\n\n```js\nlet b = '<b>';"]
PARTIAL_HTML = (
    "<p>Text with **bold and `code</p>\n<p>Next <em>is</em> fine.</p>\n"
    "<pre><code class=\"language-js\">let b = '&lt;b&gt;';</code></pre>\n"
)


def last_blocks_html(parts: list[str], count: int) -> str:
    """max_parts=N keeps the last N frozen blocks and the tail."""
    rendered = snapshot_from_parts(
        [StreamPart(str(i), part, 0) for i, part in enumerate(parts)], markdown=True, complete=True
    )
    return "".join(rendered.blocks[-count:]) + rendered.tail


HOSTILE_PARTS = [
    '<img src=x onerror="window.__pwned = 1">\n\n',
    "<script>window.__pwned = 2</script>\n\n",
    '# <svg onload="window.__pwned = 3">\n\n',
    "[one](javascript:alert(1)) [two](JaVaScRiPt:alert(2)) [three](java\tscript:alert(3)) ",
    "[four](data:text/html,<script>alert(4)</script>) [five](vbscript:msgbox(5))\n\n",
    '<a href="javascript:alert(6)">six</a> **<b onclick="alert(7)">seven</b>**\n\n',
    "```\n</code></pre><img src=x onerror=alert(8)>\n```\n",
]
HOSTILE_LITERALS = [
    '<img src=x onerror="window.__pwned = 1">',
    "<script>window.__pwned = 2</script>",
    '<svg onload="window.__pwned = 3">',
    # Links whose URL is not http(s)/mailto/relative are not links: shown as written.
    "[one](javascript:alert(1)) [two](JaVaScRiPt:alert(2)) [three](java\tscript:alert(3)) "
    "[four](data:text/html,<script>alert(4)</script>) [five](vbscript:msgbox(5))",
    '<a href="javascript:alert(6)">six</a> <b onclick="alert(7)">seven</b>',
    "</code></pre><img src=x onerror=alert(8)>",
]

# Everything in an output that the sanitiser's allow-list (trigger_django.markdown) does not
# permit; the two containers the script keeps (frozen blocks, tail) are the only other elements.
VIOLATIONS = """(root) => {
  const allowed = new Set(["H1", "H2", "H3", "H4", "H5", "H6", "P", "UL", "OL", "LI", "STRONG",
    "EM", "CODE", "PRE", "BLOCKQUOTE", "A", "HR", "BR", "DEL", "S", "TABLE", "THEAD", "TBODY",
    "TR", "TH", "TD", "IMG"]);
  const attributes = {A: ["href", "rel", "title"], OL: ["start"], CODE: ["class"],
    IMG: ["src", "alt", "title"], TH: ["style"], TD: ["style"]};
  const found = [];
  for (const el of root.querySelectorAll("*")) {
    if (el.matches("div[data-trigger-md-blocks], div[data-trigger-md-tail]")
        && el.parentElement === root) { continue; }
    if (!allowed.has(el.tagName)) { found.push("element " + el.tagName); }
    for (const attr of el.attributes) {
      if (attr.name.toLowerCase().startsWith("on")) { found.push("handler " + attr.name); }
      if (!(attributes[el.tagName] || []).includes(attr.name)) {
        found.push(el.tagName + "[" + attr.name + "]");
      }
    }
    if (el.tagName === "A" && el.getAttribute("rel") !== "noopener noreferrer") {
      found.push("rel " + el.getAttribute("rel"));
    }
    if (el.tagName === "A" && !["http:", "https:", "mailto:"].includes(el.protocol)) {
      found.push("href " + el.getAttribute("href"));
    }
    if (/^\\s*javascript:/i.test(el.getAttribute("href") || "")) { found.push("javascript href"); }
  }
  return found;
}"""

# Adds markdown viewers after load; checks every applied batch, not only the final DOM.
ADD_VIEWERS = (
    """([ticket, viewers]) => {
    const violations = """
    + VIOLATIONS
    + """;
    window.__batches = {};
    for (const [id, runId, maxParts] of viewers) {
        const el = document.createElement("div");
        el.id = id;
        Object.assign(el.dataset, {
            triggerStream: "", ticket: ticket[runId], runId, key: "default", timeout: "1",
            maxParts, render: "markdown",
        });
        el.innerHTML = "<div data-trigger-output></div>";
        window.__batches[id] = [];
        el.addEventListener("trigger:parts", () => {
            const output = el.querySelector("[data-trigger-output]");
            const html = [...output.children].map((c) => c.innerHTML).join("");
            window.__batches[id].push({html, violations: violations(output)});
        });
        document.querySelector("main").append(el);
    }
}"""
)


async def open_viewers(
    page: Any,
    server: Daphne,
    user: Any,
    emulator: Any,
    viewers: list[tuple[str, list[Any], str]],
) -> None:
    """One markdown viewer per (element id, parts, max_parts), each on its own echo-parts run."""
    tickets: dict[str, str] = {}
    specs: list[list[str]] = []
    for viewer_id, parts, max_parts in viewers:
        run_id, _ = emulator.trigger("echo-parts", {"parts": parts, "delay_ms": 15})
        tickets[run_id] = make_ticket(user_pk=user.pk, run_id=run_id, key="default")
        specs.append([viewer_id, run_id, max_parts])
    await page.goto(f"{server.url}/")
    await page.evaluate(ADD_VIEWERS, [tickets, specs])
    for viewer_id, _, _ in viewers:
        await expect(page.locator(f"#{viewer_id}")).to_have_attribute(
            "data-state", "complete", timeout=15_000
        )


async def output_html(page: Any, viewer_id: str) -> str:
    """The frozen blocks' HTML followed by the tail's, as the page holds them."""
    return await page.locator(f"#{viewer_id} [data-trigger-output]").evaluate(
        "(output) => [...output.children].map((c) => c.innerHTML).join('')"
    )


async def test_markdown_renders_the_allowed_elements_across_split_parts(
    page: Any, daphne_server: Daphne, emulator: Any, e2e_user: Any
) -> None:
    await open_viewers(
        page,
        daphne_server,
        e2e_user,
        emulator,
        [("doc", DOC_PARTS, ""), ("last", DOC_PARTS, "1"), ("partial", PARTIAL_PARTS, "")],
    )
    assert await output_html(page, "doc") == DOC_HTML
    assert render_markdown("".join(DOC_PARTS)) == DOC_HTML
    last = last_blocks_html(DOC_PARTS, 1)
    assert DOC_HTML.endswith(last)
    assert last.startswith("<hr>\n")  # the blocks before the last frozen one are gone
    assert await output_html(page, "last") == last
    assert await output_html(page, "partial") == PARTIAL_HTML
    assert render_markdown("".join(PARTIAL_PARTS)) == PARTIAL_HTML
    batches = await page.evaluate("window.__batches")
    for viewer_id in ("doc", "last", "partial"):
        assert batches[viewer_id], f"{viewer_id}: no batch applied"
        assert batches[viewer_id][-1]["html"] == await output_html(page, viewer_id)
        for batch in batches[viewer_id]:
            assert batch["violations"] == [], batch["html"]
    # Whatever the batch boundaries, the first line was a heading from the first part on.
    assert all(batch["html"].startswith("<h1>Str") for batch in batches["doc"])


async def test_hostile_markdown_creates_no_element_attribute_or_link_outside_the_allow_list(
    page: Any, daphne_server: Daphne, emulator: Any, e2e_user: Any
) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    await open_viewers(page, daphne_server, e2e_user, emulator, [("hostile", HOSTILE_PARTS, "")])
    output = page.locator("#hostile [data-trigger-output]")
    assert await output.evaluate(VIOLATIONS) == []
    assert await output.locator("a, img, svg, script, b").count() == 0
    assert await page.locator("main img, main svg, main script").count() == 0
    assert await page.evaluate("window.__pwned") is None
    assert dialogs == []
    # Shown literally, as text, where the markdown put it.
    text = await output.text_content()
    for literal in HOSTILE_LITERALS:
        assert literal in text
    await expect(output).to_contain_text("<script>window.__pwned = 2</script>", use_inner_text=True)
    assert await output.locator("h1").text_content() == '<svg onload="window.__pwned = 3">'
    assert await output.locator("strong").text_content() == '<b onclick="alert(7)">seven</b>'
    assert await output.locator("pre code").text_content() == (
        "</code></pre><img src=x onerror=alert(8)>\n"
    )
    batches = await page.evaluate("window.__batches.hostile")
    assert batches
    assert all(batch["violations"] == [] for batch in batches)


async def test_a_long_answer_fills_several_groups_with_the_exact_html_and_max_parts_spans_them(
    page: Any, daphne_server: Daphne, emulator: Any, e2e_user: Any
) -> None:
    """Frozen blocks go into groups (each a data-trigger-md-blocks container, ~8,000 characters
    of HTML, content-visibility: auto): the output's children still add up to the document."""
    section = "\n".join(ANSWERS[k] for k in ("overview", "code", "lists", "setext", "blockquote"))
    text = "\n".join([section] * 8)
    parts = [text[i : i + 100] for i in range(0, len(text), 100)]
    await open_viewers(
        page, daphne_server, e2e_user, emulator, [("long", parts, ""), ("long-last", parts, "3")]
    )
    expected = render_markdown(text)
    assert len(expected) > 3 * 8_000
    assert await output_html(page, "long") == expected
    assert await output_html(page, "long-last") == last_blocks_html(parts, 3)
    layout = await page.locator("#long [data-trigger-output]").evaluate(
        """(output) => [...output.children].map((c) => [
            c.hasAttribute("data-trigger-md-blocks") ? "group" : c.hasAttribute(
                "data-trigger-md-tail") ? "tail" : c.tagName,
            getComputedStyle(c).contentVisibility])"""
    )
    assert [kind for kind, _ in layout[:-1]] == ["group"] * (len(layout) - 1)
    assert len(layout) - 1 >= 3
    assert layout[-1][0] == "tail"
    assert {visibility for _, visibility in layout[:-1]} == {"auto"}
    batches = await page.evaluate("window.__batches")
    for viewer_id in ("long", "long-last"):
        assert all(batch["violations"] == [] for batch in batches[viewer_id])
