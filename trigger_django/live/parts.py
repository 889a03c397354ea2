"""Object parts rendered on the server, once per stream and part-template directory.

The transform behind ``{% run_viewer %}``'s streams (a hub ``Transformed`` source): every part
gains ``"text"`` (a ``text-delta``'s or a string's text, which the page appends as text) or
``"html"`` (the part rendered by its Django template, autoescaped; see ``trigger_django.parts``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from trigger_django.live.hub import Item
from trigger_django.parts import render_part

__all__ = ["render_parts"]

_dumps = json.JSONEncoder(separators=(",", ":")).encode


def render_parts(prefix: str) -> Callable[[AsyncIterator[Item]], AsyncIterator[Item]]:
    """A hub transform rendering each part's chunk with the templates under ``prefix``."""

    async def transform(items: AsyncIterator[Item]) -> AsyncIterator[Item]:
        async for item in items:
            wire: dict[str, Any] = json.loads(item.data)
            rendered = render_part(wire.get("chunk"), prefix=prefix)
            wire[rendered.kind] = rendered.content
            data = _dumps(wire)
            yield Item(item.position, item.id, data, len(data), item.resume)

    return transform
