"""{% stream_viewer render="markdown" %} in Chromium: the allowed elements, and nothing else."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import expect

from tests.e2e.conftest import DaphneServer
from trigger_django.tickets import make_ticket

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

REL = 'rel="noopener noreferrer nofollow"'

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
    "<h1>Streaming <em>markdown</em></h1>"
    "<p>Some <strong>bold</strong> text, <code>inline code</code> and <em>em</em>.</p>"
    "<ul><li>one</li><li>two</li></ul>"
    "<ol><li>first</li><li>second</li></ol>"
    "<blockquote><p>a quote</p></blockquote>"
    "<hr>"
    "<pre><code>x = 1 &lt; 2</code></pre>"
    f'<p>See <a href="https://example.com/a?b=1&amp;c=2" {REL}>the docs</a>, '
    f'<a href="/runs/" {REL}>a page</a> or <a href="mailto:a@example.com" {REL}>mail</a>.</p>'
)
# max_parts=1 keeps only the last part, and applies before rendering.
LAST_PART_HTML = (
    "<p>cs](https://example.com/a?b=1&amp;c=2), "
    f'<a href="/runs/" {REL}>a page</a> or <a href="mailto:a@example.com" {REL}>mail</a>.</p>'
)
# A stream that stops mid-construct: unclosed ** and ` stay text, an unclosed fence is open code.
PARTIAL_PARTS = ["Text with **bol", "d and `co", "de\n\nNext *is* fine.\n\n```js\nlet b = '<b>';"]
PARTIAL_HTML = (
    "<p>Text with **bold and `code</p><p>Next <em>is</em> fine.</p>"
    "<pre><code>let b = '&lt;b&gt;';</code></pre>"
)

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
    "one two [three](java\tscript:alert(3)) four five",
    '<a href="javascript:alert(6)">six</a> <b onclick="alert(7)">seven</b>',
    "</code></pre><img src=x onerror=alert(8)>",
]

# Everything in an output that the renderer's allow-list does not permit.
VIOLATIONS = """(root) => {
  const allowed = new Set(["H1", "H2", "H3", "H4", "H5", "H6", "P", "UL", "OL", "LI", "STRONG",
    "EM", "CODE", "PRE", "BLOCKQUOTE", "A", "HR", "BR"]);
  const attributes = {A: ["href", "rel"], OL: ["start"]};
  const found = [];
  for (const el of root.querySelectorAll("*")) {
    if (!allowed.has(el.tagName)) { found.push("element " + el.tagName); }
    for (const attr of el.attributes) {
      if (attr.name.toLowerCase().startsWith("on")) { found.push("handler " + attr.name); }
      if (!(attributes[el.tagName] || []).includes(attr.name)) {
        found.push(el.tagName + "[" + attr.name + "]");
      }
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
            window.__batches[id].push({html: output.innerHTML, violations: violations(output)});
        });
        document.querySelector("main").append(el);
    }
}"""
)


async def open_viewers(
    page: Any,
    server: DaphneServer,
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
    return await page.locator(f"#{viewer_id} [data-trigger-output]").inner_html()


async def test_markdown_renders_the_allowed_elements_across_split_parts(
    page: Any, daphne_server: DaphneServer, emulator: Any, e2e_user: Any
) -> None:
    await open_viewers(
        page,
        daphne_server,
        e2e_user,
        emulator,
        [("doc", DOC_PARTS, ""), ("last", DOC_PARTS, "1"), ("partial", PARTIAL_PARTS, "")],
    )
    assert await output_html(page, "doc") == DOC_HTML
    assert await output_html(page, "last") == LAST_PART_HTML
    assert await output_html(page, "partial") == PARTIAL_HTML
    batches = await page.evaluate("window.__batches")
    for viewer_id in ("doc", "last", "partial"):
        assert batches[viewer_id], f"{viewer_id}: no batch applied"
        assert batches[viewer_id][-1]["html"] == await output_html(page, viewer_id)
        for batch in batches[viewer_id]:
            assert batch["violations"] == [], batch["html"]
    # Whatever the batch boundaries, the first line was a heading from the first part on.
    assert all(batch["html"].startswith("<h1>Str") for batch in batches["doc"])


async def test_hostile_markdown_creates_no_element_attribute_or_link_outside_the_allow_list(
    page: Any, daphne_server: DaphneServer, emulator: Any, e2e_user: Any
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
        "</code></pre><img src=x onerror=alert(8)>"
    )
    batches = await page.evaluate("window.__batches.hostile")
    assert batches
    assert all(batch["violations"] == [] for batch in batches)
