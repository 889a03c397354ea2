"""Defined streams: typed handles for a task's output and input streams, as in the SDK's
``streams.define()`` / ``streams.input()``. Pass them to ``{% stream_viewer %}`` and
``{% approval_form %}`` instead of a bare key."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from django import forms
from django.core.exceptions import ImproperlyConfigured

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

    def __post_init__(self) -> None:
        # Registered as soon as it is defined, so that every process that imported the stream
        # accepts posts of forms another process rendered (the key names the form; the view
        # only takes registered ones). A form that cannot be registered is refused by the tag.
        if self.form is not None:
            from trigger_django.forms import register_input_form

            with contextlib.suppress(ImproperlyConfigured):
                register_input_form(self.form)
