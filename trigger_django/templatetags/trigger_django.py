"""``{% load trigger_django %}``: the stream viewer and the script tags.

Each tag is a thin wrapper over a typed function returning ``SafeString``.
"""

from __future__ import annotations

import json
from typing import Any

from django import template
from django import template as template_module
from django.template.context import Context
from django.template.loader import render_to_string
from django.templatetags.static import static
from django.urls import get_script_prefix
from django.utils.safestring import SafeString, mark_safe

from trigger_django.conf import get_config
from trigger_django.forms import render_approval_form
from trigger_django.runs import render_run_status, render_run_viewer
from trigger_django.snapshot import read_snapshot
from trigger_django.tickets import (
    is_run_read_token,
    make_ticket,
    validate_run_id,
    validate_stream_key,
)

register = template.Library()

DEFAULT_STREAM_KEY = "default"
#: ``render=`` values: ``text`` inserts parts as text; ``markdown`` shows them as markdown
#: rendered and sanitised on the server (docs/stream-viewer.md, *Markdown*).
RENDER_MODES = ("text", "markdown")


def _csp_nonce(context: Context) -> str | None:
    nonce = context.get("csp_nonce")
    if nonce is None:
        request = context.get("request")
        nonce = getattr(request, "csp_nonce", None)
    return None if nonce is None else str(nonce)


def _user_pk(context: Context) -> object:
    request = context.get("request")
    user = getattr(request, "user", None) if request is not None else None
    if user is None:
        user = context.get("user")
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return user.pk


@register.simple_tag(takes_context=True)
def trigger_django_script(context: Context) -> SafeString:
    """The stylesheet and the two scripts, for the ``<head>`` of the base template."""
    ws_path = get_script_prefix() + get_config().websocket_path
    # Rendered by an autoescaping template, so marking it safe is sound.
    return mark_safe(
        render_to_string(
            "trigger_django/script.html",
            {
                "css_url": static("trigger_django/trigger-django.css"),
                "js_url": static("trigger_django/trigger-django.js"),
                "forms_js_url": static("trigger_django/trigger-django-forms.js"),
                "ws_path": ws_path,
                "nonce": _csp_nonce(context),
            },
        ).strip()
    )


def _optional_int(name: str, value: object, *, minimum: int, maximum: int | None = None) -> int:
    try:
        number = int(str(value))
    except (TypeError, ValueError):
        raise template.TemplateSyntaxError(
            f"stream_viewer: {name}= must be an integer, got {value!r}."
        ) from None
    if number < minimum or (maximum is not None and number > maximum):
        bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise template.TemplateSyntaxError(
            f"stream_viewer: {name}= must be {bounds}, got {number}."
        )
    return number


@register.simple_tag(takes_context=True)
def stream_viewer(
    context: Context,
    stream_or_run_id: Any,
    run_id_or_key: Any = None,
    *,
    access_token: str | None = None,
    timeout: int | None = None,
    start_index: int | None = None,
    throttle_ms: int | None = None,
    max_parts: int | None = None,
    template: str = "trigger_django/stream_viewer.html",
    id: str | None = None,
    render: str = "text",
) -> SafeString:
    """Render a live viewer of one output stream of one run.

    ``{% stream_viewer run_id "ai-output" %}``, ``{% stream_viewer run_id %}`` (key
    ``default``) or ``{% stream_viewer ai_stream run_id %}`` with a defined stream.
    """
    if isinstance(stream_or_run_id, str):
        run_id, key = stream_or_run_id, run_id_or_key or DEFAULT_STREAM_KEY
    elif hasattr(stream_or_run_id, "id"):
        run_id, key = run_id_or_key, stream_or_run_id.id
    else:
        raise template_syntax_error(stream_or_run_id)
    return render_stream_viewer(
        context,
        run_id=run_id,
        key=key,
        access_token=access_token,
        timeout=timeout,
        start_index=start_index,
        throttle_ms=throttle_ms,
        max_parts=max_parts,
        template_name=template,
        element_id=id,
        render=render,
    )


def template_syntax_error(value: object) -> template.TemplateSyntaxError:
    return template.TemplateSyntaxError(
        f"stream_viewer: the first argument must be a run id or a defined stream (an object "
        f"with an 'id'), got {value!r}."
    )


def render_stream_viewer(
    context: Context,
    *,
    run_id: object,
    key: object = DEFAULT_STREAM_KEY,
    access_token: str | None = None,
    timeout: int | None = None,
    start_index: int | None = None,
    throttle_ms: int | None = None,
    max_parts: int | None = None,
    template_name: str = "trigger_django/stream_viewer.html",
    element_id: str | None = None,
    render: str = "text",
) -> SafeString:
    """The typed function behind ``{% stream_viewer %}``."""
    config = get_config()
    if render not in RENDER_MODES:
        raise template.TemplateSyntaxError(
            f"stream_viewer: render= must be 'text' or 'markdown', got {render!r}."
        )
    try:
        run_id = validate_run_id(run_id)
        key = validate_stream_key(key)
    except ValueError as exc:
        raise template.TemplateSyntaxError(f"stream_viewer: {exc}") from None
    # The token returned by trigger() also grants write:inputStreams: too wide to render. Carry
    # a token only when it can do nothing but read this run; otherwise the consumer mints one.
    carried_token = (
        access_token if access_token and is_run_read_token(access_token, run_id) else None
    )
    ticket = make_ticket(
        user_pk=_user_pk(context), run_id=run_id, key=key, access_token=carried_token
    )
    start = None if start_index is None else _optional_int("start_index", start_index, minimum=0)
    kept = None if max_parts is None else _optional_int("max_parts", max_parts, minimum=1)
    snapshot = read_snapshot(run_id, key, markdown=render == "markdown", start_index=start)
    viewer_context = {
        "ticket": ticket,
        "run_id": run_id,
        "key": key,
        "timeout": _optional_int(
            "timeout",
            config.timeout_seconds if timeout is None else timeout,
            minimum=1,
            maximum=600,
        ),
        "start_index": start,
        "throttle_ms": _optional_int(
            "throttle_ms", config.throttle_ms if throttle_ms is None else throttle_ms, minimum=0
        ),
        "max_parts": kept,
        "element_id": element_id,
        "render": render,
        # The text so far (docs/stream-viewer.md, *The text in the first HTML*), or None.
        "snapshot": snapshot,
        "snapshot_text": "" if snapshot is None else "".join(snapshot.kept_texts(kept)),
        "snapshot_kept": None
        if snapshot is None or kept is None or render != "text"
        else json.dumps(snapshot.kept_texts(kept)),
        # Sanitised by trigger_django.markdown (nh3's allow-list): safe to insert as HTML.
        "snapshot_blocks": mark_safe(
            "" if snapshot is None else "".join(snapshot.kept_blocks(kept))
        ),
        "snapshot_tail": mark_safe("" if snapshot is None else snapshot.tail),
    }
    return mark_safe(render_to_string(template_name, viewer_context).strip())


@register.simple_tag(takes_context=True)
def approval_form(
    context: Context, run_id: Any, stream: Any, *, next: str | None = None
) -> SafeString:
    """A form that sends input to a run's input stream (``useInputStreamSend``).

    ``{% approval_form run.id "approval" %}`` renders the default approve / reject form;
    ``{% approval_form run.id refund_input %}`` takes an input stream object whose ``form`` is a
    Django form class. Posts to ``trigger_django:send_input``; see docs/input-streams.md.
    """
    try:
        return render_approval_form(
            context.get("request"),
            run_id,
            stream,
            next_url=next,
            csrf_token=context.get("csrf_token"),
        )
    except (TypeError, ValueError) as exc:
        raise template.TemplateSyntaxError(f"approval_form: {exc}") from None


@register.simple_tag(takes_context=True)
def run_status(
    context: Context,
    run_id: Any,
    *,
    template: str = "trigger_django/run_status.html",
    id: str | None = None,
) -> SafeString:
    """A run's status badge and progress (``{% run_status run.id %}``), live; see
    docs/run-viewer.md for the metadata shape that drives the progress bar."""
    try:
        return render_run_status(
            user_pk=_user_pk(context), run_id=run_id, template_name=template, element_id=id
        )
    except ValueError as exc:
        raise template_module.TemplateSyntaxError(f"run_status: {exc}") from None


@register.simple_tag(takes_context=True)
def run_viewer(
    context: Context,
    run_id: Any,
    *,
    streams: Any = None,
    part_templates: Any = None,
    throttle_ms: int | None = None,
    timeout: int | None = None,
    template: str = "trigger_django/run_viewer.html",
    id: str | None = None,
) -> SafeString:
    """A run's status, metadata and every stream as it appears (``useRealtimeRunWithStreams``):
    ``{% run_viewer run.id streams="openai" part_templates="weather/parts" %}``."""
    try:
        return render_run_viewer(
            user_pk=_user_pk(context),
            run_id=run_id,
            streams=streams,
            part_templates=part_templates,
            throttle_ms=None
            if throttle_ms is None
            else _optional_int("throttle_ms", throttle_ms, minimum=0),
            timeout=None
            if timeout is None
            else _optional_int("timeout", timeout, minimum=1, maximum=600),
            template_name=template,
            element_id=id,
        )
    except ValueError as exc:
        raise template_module.TemplateSyntaxError(f"run_viewer: {exc}") from None
