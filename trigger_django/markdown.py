"""Streaming markdown, rendered on the server: CommonMark plus GFM tables, strikethrough and
autolinks (markdown-it-py), sanitised with an allow-list (nh3).

`MarkdownStream` is fed the text of a stream as it arrives and, on every `flush()`, says which
top-level blocks have become final ("append these") and what the still-open end of the text looks
like ("replace the tail with this"). A frozen block is rendered once and never again, so the cost
of a flush follows the size of the open tail, not of the whole answer.

A block is frozen only when nothing written later can change its HTML:

* only complete lines (ended by a newline) take part in the decision, and the last top-level
  block among them is never frozen: a later line may still continue it (a list item, a lazy
  paragraph continuation, a setext underline, a table row, a fence's body);
* a block before it is closed for good, because CommonMark decides line by line whether a line
  continues an open block, and the only rule that looks one line ahead (a GFM table interrupting a
  paragraph) needs that next line complete too;
* a block that holds text which a later link reference definition could turn into a link
  (``[label]``, ``[text][label]`` left unresolved) stays open until the end, and so does
  everything after it: definitions anywhere in the document apply to the whole document;
* references defined in frozen text are kept, so later blocks resolve against them.

A flush costs about the size of the open tail. When one block grows very large (over
`LARGE_TAIL` characters: a huge paragraph, list or fence), its tail is re-rendered only each time
it has grown by an eighth, which keeps the cost per character flat at the price of a tail that
lags by up to that much.

While the stream runs, the tail is *healed* so that it looks right mid-stream: unterminated
emphasis, strikethrough and code spans are closed, a link whose URL is still arriving shows its
text only, a half-written image is hidden, and a last line holding only block markers (``-``,
``#``, ``>``, ``1.``, a partial setext underline or closing fence) is held back until it has
content. `finish()` renders the rest as written, unhealed: the concatenation of every appended
block equals `render_markdown()` of the whole text.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import nh3
from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from markdown_it.token import Token

__all__ = ["MarkdownStream", "RenderUpdate", "render_markdown", "sanitize_html"]

# What rendered markdown may contain. Raw HTML in the source is never passed through (markdown-it
# runs with html=False and escapes it); this allow-list is the second wall.
ALLOWED_TAGS = frozenset(
    {
        "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6",
        "hr", "img", "li", "ol", "p", "pre", "s", "strong", "table", "tbody", "td", "th",
        "thead", "tr", "ul",
    }
)  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title"},
    "code": {"class"},
    "ol": {"start"},
    "td": {"style"},
    "th": {"style"},
}
URL_SCHEMES = frozenset({"http", "https", "mailto"})

_cleaner = nh3.Cleaner(
    tags=set(ALLOWED_TAGS),
    attributes={tag: set(names) for tag, names in ALLOWED_ATTRIBUTES.items()},
    url_schemes=set(URL_SCHEMES),
    link_rel="noopener noreferrer",
    strip_comments=True,
    filter_style_properties={"text-align"},
)


def sanitize_html(html: str) -> str:
    """Keep only the allow-listed tags, attributes and URL schemes; links get
    ``rel="noopener noreferrer"``."""
    return _cleaner.clean(html)


def _heal_rule(state: StateCore) -> None:
    """A core rule between block and inline parsing: close what the open end of the text has
    left unterminated, in the last inline run only (never in code)."""
    if not state.env.get("heal"):
        return
    tokens = state.tokens
    index = len(tokens) - 1
    while index >= 0 and tokens[index].nesting == -1:
        index -= 1
    if index >= 0 and tokens[index].type == "inline":
        tokens[index].content = heal_inline(tokens[index].content)


def _new_parser() -> MarkdownIt:
    md = MarkdownIt("gfm-like", {"html": False})
    md.core.ruler.after("block", "trigger_heal", _heal_rule)
    return md


_md = _new_parser()
# Block structure only (no inline parsing): enough to find where top-level blocks start.
_md_blocks = MarkdownIt("gfm-like", {"html": False}).disable(["inline", "linkify", "text_join"])


def render_markdown(text: str) -> str:
    """The whole text rendered and sanitised, as a finished stream's blocks add up to."""
    return sanitize_html(_md.render(_normalize(text)))


@dataclass(frozen=True, slots=True)
class RenderUpdate:
    """What changed since the previous flush: `append` holds the HTML of blocks that are now
    final (in order, each sent once), `tail` the HTML that replaces the open tail."""

    append: list[str] = field(default_factory=list)
    tail: str = ""


def _normalize(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\0", "\ufffd")


def _line_offsets(text: str, upto: int) -> list[int]:
    """Character offsets of the starts of lines 0..upto in text."""
    offsets = [0]
    position = 0
    for _ in range(upto):
        position = text.index("\n", position) + 1
        offsets.append(position)
    return offsets


def _top_level_blocks(tokens: Sequence[Token]) -> list[tuple[int, int]]:
    """(first, end) token index ranges of the top-level blocks."""
    blocks: list[tuple[int, int]] = []
    start = -1
    depth = 0
    for index, token in enumerate(tokens):
        if depth == 0:
            start = index
        depth += token.nesting
        if depth == 0:
            blocks.append((start, index + 1))
    return blocks


def _might_become_link(tokens: Sequence[Token]) -> bool:
    """Does this block's inline text hold a bracketed label that a later reference definition
    could turn into a link? (Conservative: any ``[...]`` with a non-blank inside, in text.)"""
    for token in tokens:
        if token.type != "inline" or not token.children:
            continue
        pieces: list[str] = []
        stack = list(reversed(token.children))
        while stack:
            child = stack.pop()
            if child.type == "text":
                pieces.append(child.content)
            else:
                pieces.append("\x00")  # markup or code: not blank, not a bracket
            if child.children:
                stack.extend(reversed(child.children))
        if _has_bracketed_label("".join(pieces)):
            return True
    return False


def _has_bracketed_label(text: str) -> bool:
    """``[...]`` with something other than whitespace inside (one linear pass)."""
    opened = False
    filled = False
    for char in text:
        if char == "[":
            opened, filled = True, False
        elif char == "]":
            if opened and filled:
                return True
            opened = False
        elif opened and not filled and not char.isspace():
            filled = True
    return False


# A last, incomplete line that holds only block markers: shown once it has content.
# An open tail longer than this (characters) is re-rendered only when it has grown by
# 1/LARGE_TAIL_GROWTH since it was last rendered: amortised flat cost for giant blocks.
LARGE_TAIL = 8_192
LARGE_TAIL_GROWTH = 8
_MARKER_LINE = re.compile(r"[ \t>]*(?:[-*+=#_~`|:]+|\d{1,9}[.)])?[ \t]*")
# Emphasis markers at the very end with nothing to emphasise yet ("hello **").
_DANGLING_RUN = re.compile(r"(?:^|(?<=\s))[*_~]+\Z")
_BLANK_END = re.compile(r"\n[ \t]*\n[ \t]*\Z")


class MarkdownStream:
    """Incremental renderer for one stream's text. Not thread-safe; one per stream."""

    def __init__(self) -> None:
        self._frozen_text: list[str] = []  # the text of frozen blocks, in pieces
        self._frozen_html: list[str] = []  # their HTML, one entry per block
        self._open = ""  # text after the frozen blocks (normalised)
        self._carry_cr = False  # a "\r" at the end of the last delta: may be half of "\r\n"
        self._references: dict[str, Any] = {}
        self._dirty = True
        self._checked = 0  # length of the complete lines of `_open` last looked at by _freeze
        self._tail_rendered_at = 0  # length of `_open` when the tail was last rendered
        self._tail = ""
        self._finished = False

    @property
    def text(self) -> str:
        """All the text fed so far (line endings normalised to ``\\n``)."""
        return "".join(self._frozen_text) + self._open + ("\n" if self._carry_cr else "")

    def snapshot(self) -> RenderUpdate:
        """Everything rendered so far, for a viewer that joins now: every frozen block in
        `append` and the tail of the last flush (empty after `finish()`)."""
        return RenderUpdate(list(self._frozen_html), self._tail)

    @property
    def open_size(self) -> int:
        """Characters after the frozen blocks (what `pending_text` holds, without copying it):
        what a flush parses, so what it costs, follows it."""
        return len(self._open) + self._carry_cr

    @property
    def pending_text(self) -> str:
        """The text after the frozen blocks: what the tail is rendered from."""
        return self._open + ("\n" if self._carry_cr else "")

    def feed(self, delta: str) -> None:
        """Add text. Cheap: rendering happens in `flush()`."""
        if not isinstance(delta, str):
            raise TypeError(f"MarkdownStream.feed() takes text (str), not {type(delta).__name__}")
        if self._finished:
            raise RuntimeError("MarkdownStream.feed() after finish(): the stream has ended")
        if not delta:
            return
        if self._carry_cr:
            delta = "\r" + delta
            self._carry_cr = False
        if delta.endswith("\r"):
            delta = delta[:-1]
            self._carry_cr = True
        self._open += _normalize(delta)
        self._dirty = True

    def flush(self) -> RenderUpdate:
        """Freeze the blocks that have become final and render the open tail, healed."""
        if self._finished:
            return RenderUpdate()
        if not self._dirty:
            return RenderUpdate([], self._tail)
        append = self._freeze()
        self._frozen_html.extend(append)
        pending = len(self._open)
        if (
            not append
            and pending > LARGE_TAIL
            and pending - self._tail_rendered_at < pending // LARGE_TAIL_GROWTH
        ):
            # One very large open block (a huge paragraph, list or fence): re-render it only
            # once it has grown by an eighth, so the cost per character stays flat.
            return RenderUpdate([], self._tail)
        self._tail = self._render_tail()
        self._tail_rendered_at = pending
        self._dirty = False
        return RenderUpdate(append, self._tail)

    def final_tail(self) -> str:
        """The open tail rendered as written (unhealed), without ending the stream: what
        `finish()` would append, as one string. The frozen blocks followed by it equal
        `render_markdown()` of the text so far."""
        if self._finished:
            return ""
        source = self._open + ("\n" if self._carry_cr else "")
        if not source.strip():
            return ""
        env = {"references": dict(self._references)}
        return sanitize_html(_md.render(source, env))

    def finish(self) -> RenderUpdate:
        """The stream has ended: render everything still open as written (unhealed) and append
        it; the tail becomes empty."""
        if self._finished:
            return RenderUpdate()
        self._finished = True
        if self._carry_cr:
            self._open += "\n"
            self._carry_cr = False
        source = self._open
        env = {"references": dict(self._references)}
        tokens = _md.parse(source, env)
        html = [
            sanitize_html(_md.renderer.render(tokens[first:end], _md.options, env))
            for first, end in _top_level_blocks(tokens)
        ]
        self._frozen_text.append(source)
        self._frozen_html.extend(html)
        self._open = ""
        self._tail = ""
        return RenderUpdate(html, "")

    # -- internals -----------------------------------------------------------------------

    def _freeze(self) -> list[str]:
        source = self._open
        complete = source[: source.rfind("\n") + 1]
        if len(complete) == self._checked:
            return []  # no new complete line: the decision below would come out the same
        self._checked = len(complete)
        block_tokens = _md_blocks.parse(complete, {"references": dict(self._references)})
        spans = [
            (opening[0], opening[1])
            for first, _ in _top_level_blocks(block_tokens)
            if (opening := block_tokens[first].map)
        ]
        if len(spans) < 2:
            return []
        # Everything before the last complete block's first line is closed, unless a reference
        # definition runs straight into a block: its title may still grow over the next lines
        # and swallow that block. (Definitions leave no tokens: their lines are the non-blank
        # ones no block covers.) Then only what precedes the definition is closed.
        lines = complete.split("\n")
        closed_lines = spans[-1][0]
        previous_end = 0
        for start, end in spans:
            if start > previous_end and lines[start - 1].strip():
                closed_lines = min(closed_lines, previous_end)
                break
            previous_end = end
        if not closed_lines:
            return []
        offsets = _line_offsets(complete, closed_lines)
        candidate = complete[: offsets[closed_lines]]
        env: dict[str, Any] = {"references": dict(self._references)}
        tokens = _md.parse(candidate, env)
        html: list[str] = []
        frozen_lines = closed_lines
        for first, end in _top_level_blocks(tokens):
            if _might_become_link(tokens[first:end]):
                opening = tokens[first].map
                frozen_lines = opening[0] if opening else 0
                break
            html.append(sanitize_html(_md.renderer.render(tokens[first:end], _md.options, env)))
        if frozen_lines == 0 or not html:
            return []
        for label, definition in env["references"].items():
            if label not in self._references and definition["map"][1] <= frozen_lines:
                self._references[label] = definition
        cut = offsets[frozen_lines]
        self._frozen_text.append(source[:cut])
        self._open = source[cut:]
        self._checked -= cut
        self._tail_rendered_at = 0
        return html

    def _render_tail(self) -> str:
        source = self._open
        last_newline = source.rfind("\n")
        if _MARKER_LINE.fullmatch(source, last_newline + 1):
            source = source[: last_newline + 1]
        if not source.strip():
            return ""
        heal = not _BLANK_END.search(source)
        env = {"references": dict(self._references), "heal": heal}
        return sanitize_html(_md.render(source, env))


# -- healing the open end of an inline run -------------------------------------------------


def _is_space(char: str) -> bool:
    return char.isspace()


def _is_punct(char: str) -> bool:
    return unicodedata.category(char)[0] in "PS"


def heal_inline(text: str) -> str:
    """Close what the end of a paragraph's inline text leaves open: a code span, a link whose
    URL is still arriving, emphasis and strikethrough. Returns the text to render instead."""
    # 1. A mask of the text with code span contents and escaped characters neutralised, so that
    # the later scans see only live markup. Positions stay aligned with `text`.
    mask = list(text)
    code_closer = ""
    code_open = len(text)  # where an unterminated code span's backticks start
    index = 0
    length = len(text)
    while index < length:
        char = text[index]
        if char == "\\" and index + 1 < length:
            mask[index + 1] = "."
            index += 2
            continue
        if char != "`":
            index += 1
            continue
        run_end = index
        while run_end < length and text[run_end] == "`":
            run_end += 1
        run = run_end - index
        closing = _find_backtick_run(text, run_end, run)
        if closing < 0:
            # An unterminated code span: everything after it is code.
            if text[run_end:].strip():
                code_closer = "`" * run
                code_open = index
                for position in range(run_end, length):
                    mask[position] = "a"
            else:
                text = text[:index]
                mask = mask[:index]
            break
        for position in range(run_end, closing):
            mask[position] = "a"
        index = closing + run
    masked = "".join(mask)

    # 2. Links and images whose label or URL is unfinished.
    deletions: list[tuple[int, int]] = []
    openers: list[int] = []
    position = 0
    cut_from = len(masked)
    while position < len(masked):
        char = masked[position]
        if char == "[":
            openers.append(position)
        elif char == "]" and openers:
            opener = openers.pop()
            if masked.startswith("(", position + 1) and _find_paren_close(masked, position + 2) < 0:
                is_image = opener > 0 and masked[opener - 1] == "!"
                if is_image:
                    cut_from = opener - 1
                else:
                    deletions.append((opener, opener + 1))
                    cut_from = position
                openers.clear()
                break
        position += 1
    for opener in openers:
        if opener > 0 and masked[opener - 1] == "!":
            cut_from = min(cut_from, opener - 1)
        else:
            deletions.append((opener, opener + 1))
    if cut_from < len(masked):
        if cut_from <= code_open:
            code_closer = ""
        text, masked = text[:cut_from], masked[:cut_from]
    for start, end in sorted(deletions, reverse=True):
        if start < len(text):
            text = text[:start] + text[end:]
            masked = masked[:start] + masked[end:]

    # 3. Emphasis and strikethrough left open.
    if code_closer:
        text += code_closer
        masked += "`" * len(code_closer)
    else:
        keep = len(masked.rstrip())
        text, masked = text[:keep], masked[:keep]
    dangling_end = _DANGLING_RUN.search(masked)
    if dangling_end and not code_closer:
        keep = len(masked[: dangling_end.start()].rstrip())
        text, masked = text[:keep], masked[:keep]
    closers, dangling = _open_delimiters(masked)
    for start, end in sorted(dangling, reverse=True):
        text = text[:start] + text[end:]
    if closers:
        text = text.rstrip() + "".join(reversed(closers))
    return text


def _find_backtick_run(text: str, start: int, run: int) -> int:
    index = start
    length = len(text)
    while True:
        index = text.find("`", index)
        if index < 0:
            return -1
        end = index
        while end < length and text[end] == "`":
            end += 1
        if end - index == run:
            return index
        index = end


def _find_paren_close(text: str, start: int) -> int:
    depth = 0
    for index in range(start, len(text)):
        char = text[index]
        if char == "(":
            depth += 1
        elif char == ")":
            if depth == 0:
                return index
            depth -= 1
        elif char == "\n" and index + 1 < len(text) and text[index + 1] == "\n":
            return index
    return -1


def _open_delimiters(masked: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Emphasis (``*``, ``_``) and strikethrough (``~~``) runs opened and not closed, as the
    closers to append (innermost last) and the openers with nothing after them to drop."""
    stack: list[tuple[str, int, int]] = []  # (char, length still open, position)
    open_runs = {"*": 0, "_": 0, "~": 0}  # entries in the stack per character
    index = 0
    length = len(masked)
    while index < length:
        char = masked[index]
        if char not in "*_~":
            index += 1
            continue
        end = index
        while end < length and masked[end] == char:
            end += 1
        run = end - index
        before = masked[index - 1] if index > 0 else " "
        after = masked[end] if end < length else " "
        left = not _is_space(after) and (
            not _is_punct(after) or _is_space(before) or _is_punct(before)
        )
        right = not _is_space(before) and (
            not _is_punct(before) or _is_space(after) or _is_punct(after)
        )
        if char == "_":
            can_open = left and (not right or _is_punct(before))
            can_close = right and (not left or _is_punct(after))
        else:
            can_open, can_close = left, right
        if char == "~" and run != 2:
            index = end
            continue
        remaining = run
        if can_close:
            while remaining and open_runs[char]:
                while stack[-1][0] != char:
                    open_runs[stack.pop()[0]] -= 1
                opened_char, opened, position = stack.pop()
                open_runs[char] -= 1
                used = min(opened, remaining)
                remaining -= used
                if opened > used:
                    stack.append((opened_char, opened - used, position))
                    open_runs[char] += 1
        if remaining and can_open:
            stack.append((char, remaining, index))
            open_runs[char] += 1
        index = end
    closers: list[str] = []
    dangling: list[tuple[int, int]] = []
    for char, opened, position in stack:
        if not masked[position + opened :].strip(char + " \t\n"):
            dangling.append((position, position + opened))
        else:
            closers.append(char * opened)
    return closers, dangling
