"""Defined streams: typed handles for a task's output and input streams, as in the SDK's
``streams.define()`` / ``streams.input()``. Pass them to ``{% stream_viewer %}`` and
``{% approval_form %}`` instead of a bare key."""

from __future__ import annotations

from dataclasses import dataclass

from django import forms

__all__ = ["InputStream", "OutputStream"]


@dataclass(frozen=True)
class OutputStream:
    """An output stream a task writes to (``streams.define({id})`` in the SDK)."""

    id: str


@dataclass(frozen=True)
class InputStream:
    """An input stream a task reads (``streams.input({id})``); ``form`` validates what is sent."""

    id: str
    form: type[forms.Form] | None = None
