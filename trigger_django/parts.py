"""Object parts of AI streams, rendered on the server (``{% run_viewer %}``).

A stream of AI SDK parts (``TextStreamPart``: ``text-delta``, ``tool-call``, ``tool-result``…)
is shown as one document: ``text-delta`` parts append their text to the current text block
(as text, never HTML), every other part is rendered by a Django template chosen by its type,
``<prefix>/<type>.html``, falling back to ``<prefix>/default.html`` and then to ours, which
shows the part as JSON. Templates render with autoescaping and the part as ``part``, so a
hostile string in a tool's arguments is text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from django.template.loader import select_template

__all__ = [
    "DEFAULT_PART_PREFIX",
    "RenderedPart",
    "part_text",
    "render_part",
    "validate_part_prefix",
]

#: Where ``{% run_viewer %}`` looks for part templates unless ``part_templates=`` says otherwise.
DEFAULT_PART_PREFIX = "trigger_django/parts"
_FALLBACK_TEMPLATE = "trigger_django/parts/default.html"
#: Part types become template names: letters, digits, ``-`` and ``_`` only (no ``..``, no ``/``).
_PART_TYPE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_PREFIX_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]{0,199}")
#: The keys AI SDK versions use for a text delta's text (v4 ``textDelta``, v5 ``delta``).
_TEXT_KEYS = ("textDelta", "delta", "text")


@dataclass(frozen=True)
class RenderedPart:
    """One part as the page applies it: ``text`` appended as text, or ``html`` inserted."""

    kind: Literal["text", "html"]
    content: str


def validate_part_prefix(prefix: object) -> str:
    """A template directory for part templates, e.g. ``"weather/parts"``."""
    if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix) or ".." in prefix:
        raise ValueError(
            f"part templates must be a template directory such as 'myapp/parts', got {prefix!r}."
        )
    return prefix.rstrip("/")


def part_text(chunk: object) -> str | None:
    """The text a part adds to the current text block, or ``None`` when it is not text."""
    if isinstance(chunk, str):
        return chunk
    if isinstance(chunk, dict) and chunk.get("type") == "text-delta":
        for key in _TEXT_KEYS:
            value = chunk.get(key)
            if isinstance(value, str):
                return value
        return ""
    return None


def render_part(chunk: object, *, prefix: str = DEFAULT_PART_PREFIX) -> RenderedPart:
    """Render one stream part: text for strings and ``text-delta``, else a template's HTML."""
    text = part_text(chunk)
    if text is not None:
        return RenderedPart("text", text)
    part_type = chunk.get("type") if isinstance(chunk, dict) else None
    names = []
    if isinstance(part_type, str) and _PART_TYPE_RE.fullmatch(part_type):
        names.append(f"{prefix}/{part_type}.html")
    names += [f"{prefix}/default.html", _FALLBACK_TEMPLATE]
    template = select_template(list(dict.fromkeys(names)))
    context: dict[str, Any] = {
        "part": chunk,
        "part_type": part_type if isinstance(part_type, str) else None,
        "part_json": json.dumps(chunk, indent=2, ensure_ascii=False, default=str),
    }
    return RenderedPart("html", template.render(context).strip())
