"""Input-stream forms: the default approve / reject form, payload building and idempotency keys.

A form class describes the payload one input stream accepts (``{% approval_form %}`` renders it,
the send view validates posts with it). Fields whose value must come from the server, such as
who approved, are declared on the class and are never taken from the client::

    class RefundForm(forms.Form):
        amount = forms.DecimalField(max_digits=8, decimal_places=2)
        server_fields = {"reviewer": lambda request: request.user.get_username()}

        def server_data(self, request):  # optional, for values that need more than a lambda
            return {"reviewed_at": timezone.now().isoformat()}

See docs/input-streams.md.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django import forms
from django.core import signing
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpRequest, QueryDict
from django.middleware.csrf import get_token
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.module_loading import import_string
from django.utils.safestring import SafeString

from trigger_django.conf import get_config
from trigger_django.errors import ConfigurationError, RequestError
from trigger_django.tickets import RUN_WIDE, make_ticket, validate_run_id, validate_stream_key

__all__ = [
    "IDEMPOTENCY_KEY_FIELD",
    "IDEMPOTENCY_KEY_MAX_AGE",
    "NEXT_FIELD",
    "ApprovalDecisionField",
    "ApprovalForm",
    "IdempotencyKey",
    "InvalidIdempotencyKey",
    "UnknownInputForm",
    "build_payload",
    "form_class_for_stream",
    "make_idempotency_key",
    "read_idempotency_key",
    "register_input_form",
    "registered_input_form",
    "render_approval_form",
    "safe_next_url",
    "server_values",
    "submit_buttons",
]

#: Names of the hidden inputs the rendered form carries besides the form's own fields.
NEXT_FIELD = "next"
IDEMPOTENCY_KEY_FIELD = "idempotency_key"
_RESERVED_FIELDS = frozenset({NEXT_FIELD, IDEMPOTENCY_KEY_FIELD, "csrfmiddlewaretoken"})

#: How long a rendered form stays valid, and how long the send view remembers a used key. A form
#: must not outlive the memory of its key, or a stale double submit could send twice.
IDEMPOTENCY_KEY_MAX_AGE = 24 * 3600
_KEY_SALT = "trigger_django.input.idempotency"

ServerField = Callable[[HttpRequest], Any]
#: ``(name, value, label)`` of one submit button; ``name`` None for a plain "Send" button.
SubmitButton = tuple[str | None, str | None, str]


class ApprovalDecisionField(forms.Field):
    """``true`` / ``false`` from a button (or a JSON boolean), cleaned to a Python ``bool``.

    Unlike ``BooleanField`` a missing or unknown value is an error, never a silent ``False``.
    """

    default_error_messages = {
        "required": "Choose approve or reject.",
        "invalid": "Choose approve or reject (send true or false, not %(value)r).",
    }
    _TRUE = frozenset({"true", "1", "yes", "on"})
    _FALSE = frozenset({"false", "0", "no", "off"})

    def to_python(self, value: Any) -> bool | None:
        if isinstance(value, bool):
            return value
        if value in self.empty_values:
            return None
        text = str(value).strip().lower()
        if text in self._TRUE:
            return True
        if text in self._FALSE:
            return False
        raise ValidationError(
            self.error_messages["invalid"], code="invalid", params={"value": value}
        )

    def validate(self, value: Any) -> None:
        if value is None and self.required:
            raise ValidationError(self.error_messages["required"], code="required")


def reviewer_username(request: HttpRequest) -> str:
    """The logged-in user's username: who answered, as the server knows it."""
    return str(request.user.get_username())


class ApprovalForm(forms.Form):
    """The default input form: approve / reject, sending ``{"approved": bool, "reviewer": str}``."""

    approved = ApprovalDecisionField()

    server_fields: Mapping[str, ServerField] = {"reviewer": reviewer_username}
    submit_buttons: tuple[SubmitButton, ...] = (
        ("approved", "true", "Approve"),
        ("approved", "false", "Reject"),
    )

    def success_message(self) -> str:
        return "Approved." if self.cleaned_data.get("approved") else "Rejected."


# --- Which form a stream uses -------------------------------------------------------------------
#
# A rendered form's signed key names the form class that validates its post. The name is looked
# up in a registry, never imported: even with the signing key, a request can only choose among
# the forms this server registered (the ``INPUT_FORMS`` setting, every ``InputStream``'s form,
# and every form ``{% approval_form %}`` rendered), not any importable class.

#: Registry name -> form class. Names are ``module.QualName``, the same in every process.
_input_forms: dict[str, type[forms.BaseForm]] = {}


class UnknownInputForm(RequestError):
    """A form key names a form that is not one of this server's input forms (400)."""


def _import_form_class(path: str, origin: str) -> type[forms.BaseForm]:
    """Import a form class named by the *settings* or a template (never by a request)."""
    try:
        form_class = import_string(path)
    except ImportError as exc:
        raise ConfigurationError(f"{origin}: cannot import form class {path!r} ({exc}).") from exc
    if not (isinstance(form_class, type) and issubclass(form_class, forms.BaseForm)):
        raise ConfigurationError(f"{origin}: {path!r} is not a django.forms.Form subclass.")
    return form_class


def form_class_path(form_class: type[forms.BaseForm]) -> str:
    """The registry name of ``form_class``: its dotted path (it must be module level, so that
    every server process knows it under the same name)."""
    path = f"{form_class.__module__}.{form_class.__qualname__}"
    try:
        importable = import_string(path) is form_class
    except ImportError:
        importable = False
    if not importable:
        raise ConfigurationError(
            f"Input form {form_class.__qualname__} must be defined at module level so that "
            f"every server process knows it as {path!r}."
        )
    return path


def register_input_form(form_class: type[forms.BaseForm]) -> str:
    """Let rendered forms' keys name ``form_class``; returns its registry name.

    ``InputStream(..., form=...)`` and ``{% approval_form %}`` call this; call it yourself (at
    import time) for a form you pass to the tag in an object of your own, when several server
    processes answer posts, or list the form in ``TRIGGER_DJANGO["INPUT_FORMS"]``.
    """
    if not (isinstance(form_class, type) and issubclass(form_class, forms.BaseForm)):
        raise ConfigurationError(f"{form_class!r} is not a django.forms.Form subclass.")
    name = form_class_path(form_class)
    _input_forms[name] = form_class
    return name


def registered_input_form(name: str) -> type[forms.BaseForm]:
    """The input form registered as ``name`` (a form key's choice), or :class:`UnknownInputForm`.

    Looks in the registry and in ``INPUT_FORMS``; never imports what the name says."""
    form_class = _input_forms.get(name)
    if form_class is not None:
        return form_class
    for stream_id, path in get_config().input_forms.items():
        if path == name:
            return form_class_for_stream(stream_id)
    raise UnknownInputForm(
        f"The form this page was rendered with ({name!r}) is not one of this server's input "
        "forms; reload the page. (Site administrators: list it in "
        "TRIGGER_DJANGO['INPUT_FORMS'], or define its InputStream in a module every server "
        "process imports.)"
    )


def form_class_for_stream(
    stream_id: str, form: type[forms.BaseForm] | str | None = None
) -> type[forms.BaseForm]:
    """The form for ``stream_id``: ``form`` if given (a class, or a dotted path written in the
    code or a template, never one from a request), else ``TRIGGER_DJANGO["INPUT_FORMS"]``, else
    :class:`ApprovalForm`."""
    if isinstance(form, type):
        if not issubclass(form, forms.BaseForm):
            raise ConfigurationError(f"{form!r} is not a django.forms.Form subclass.")
        return form
    if isinstance(form, str):
        return _import_form_class(form, f"Input stream {stream_id!r}")
    path = get_config().input_forms.get(stream_id)
    if path:
        return _import_form_class(path, f'TRIGGER_DJANGO["INPUT_FORMS"][{stream_id!r}]')
    return ApprovalForm


register_input_form(ApprovalForm)


def submit_buttons(form_class: type[forms.BaseForm]) -> tuple[SubmitButton, ...]:
    buttons: tuple[SubmitButton, ...] = getattr(form_class, "submit_buttons", ())
    return buttons or ((None, None, "Send"),)


# --- Payloads -----------------------------------------------------------------------------------


def server_values(form: forms.BaseForm, request: HttpRequest) -> dict[str, Any]:
    """Values filled in by the server (``server_fields`` and ``server_data(request)``)."""
    values: dict[str, Any] = {
        name: compute(request) for name, compute in getattr(type(form), "server_fields", {}).items()
    }
    server_data = getattr(form, "server_data", None)
    if callable(server_data):
        values.update(server_data(request))
    return values


def build_payload(
    form_class: type[forms.BaseForm], client_data: Mapping[str, Any], request: HttpRequest
) -> tuple[forms.BaseForm, dict[str, Any] | None]:
    """Validate ``client_data`` with ``form_class`` and return ``(form, payload)``.

    ``payload`` is ``None`` when the form is invalid. Server values overwrite whatever the client
    sent under the same names, both before validation (so a form may declare them as fields) and
    after. The payload is made JSON-safe (dates, decimals, UUIDs become strings).
    """
    probe = form_class()
    forced = server_values(probe, request)
    # A QueryDict keeps every value of multi-valued fields; copy() makes it mutable.
    data: Any = client_data.copy() if isinstance(client_data, QueryDict) else dict(client_data)
    for name in _RESERVED_FIELDS:
        data.pop(name, None)
    for name, value in forced.items():
        if name in probe.fields:
            data[name] = value
    form = form_class(data=data)
    if not form.is_valid():
        return form, None
    payload = {**form.cleaned_data, **forced}
    safe: dict[str, Any] = json.loads(json.dumps(payload, cls=DjangoJSONEncoder))
    return form, safe


def success_message(form: forms.BaseForm) -> str:
    message = getattr(form, "success_message", None)
    if callable(message):
        return str(message())
    return str(message) if message else "Sent."


# --- Idempotency keys ---------------------------------------------------------------------------


class InvalidIdempotencyKey(RequestError):
    """The key was not made by this server, was made for another run or stream, or expired
    (400)."""


@dataclass(frozen=True)
class IdempotencyKey:
    nonce: str
    run_id: str
    stream_id: str
    #: The registry name of the form the page showed (:func:`registered_input_form`), or
    #: ``None`` for the stream's own form (``INPUT_FORMS`` or the default).
    form_name: str | None


def make_idempotency_key(run_id: str, stream_id: str, form_name: str | None = None) -> str:
    """A signed, random, per-render key binding one form to one run and stream (and to the
    registry name of its form class)."""
    value = {"n": secrets.token_urlsafe(16), "r": run_id, "s": stream_id, "f": form_name}
    return signing.dumps(value, salt=_KEY_SALT)


def read_idempotency_key(key: str, run_id: str, stream_id: str) -> IdempotencyKey:
    try:
        value = signing.loads(key, salt=_KEY_SALT, max_age=IDEMPOTENCY_KEY_MAX_AGE)
    except signing.SignatureExpired as exc:
        raise InvalidIdempotencyKey(
            "This form has expired; reload the page and try again."
        ) from exc
    except signing.BadSignature as exc:
        raise InvalidIdempotencyKey("The form's idempotency key is not valid.") from exc
    if not isinstance(value, dict) or value.get("r") != run_id or value.get("s") != stream_id:
        raise InvalidIdempotencyKey("The form's idempotency key belongs to another run or stream.")
    form_name = value.get("f") or None
    if form_name is not None and not isinstance(form_name, str):
        raise InvalidIdempotencyKey("The form's idempotency key is not valid.")
    return IdempotencyKey(
        nonce=str(value.get("n")),
        run_id=run_id,
        stream_id=stream_id,
        form_name=form_name,
    )


# --- Rendering ----------------------------------------------------------------------------------


def safe_next_url(request: HttpRequest | None, candidate: str | None) -> str | None:
    """``candidate`` if it is a URL on this site, else ``None``."""
    if not candidate or request is None:
        return None
    if url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return None


def _user_pk(request: HttpRequest | None) -> object:
    user = getattr(request, "user", None)
    return user.pk if user is not None and user.is_authenticated else None


def _finished_label(run_id: str) -> str | None:
    from trigger_django.runs import FINISHED_STATUSES, recent_run, status_view

    run = recent_run(run_id)
    if run is None or run.status not in FINISHED_STATUSES:
        return None
    return status_view(run.status).label


def render_approval_form(
    request: HttpRequest | None,
    run_id: str,
    stream: Any,
    *,
    next_url: str | None = None,
    csrf_token: Any = None,
) -> SafeString:
    """Render the input form for ``stream`` (an id, or an object with ``id`` and ``form``)."""
    if isinstance(stream, str):
        stream_id, form_spec = stream, None
    elif hasattr(stream, "id"):
        stream_id, form_spec = str(stream.id), getattr(stream, "form", None)
    else:
        raise TypeError(
            f"approval_form needs a stream id or an input stream object, got {stream!r}."
        )
    run_id = validate_run_id(run_id)
    stream_id = validate_stream_key(stream_id)
    form_class = form_class_for_stream(stream_id, form_spec)
    # Only a form chosen in the template needs to travel with the post (by its registry name);
    # the others the view finds again from INPUT_FORMS.
    form_name = register_input_form(form_class) if form_spec is not None else None

    form = form_class(auto_id=f"id_{stream_id}_%s")
    button_fields = {name for name, _, _ in submit_buttons(form_class) if name}
    hidden = button_fields | set(getattr(form_class, "server_fields", {}))
    for name in hidden:
        form.fields.pop(name, None)

    here = request.get_full_path() if request is not None else ""
    context = {
        "action": reverse("trigger_django:send_input", args=[run_id, stream_id]),
        "run_id": run_id,
        "stream_id": stream_id,
        "form": form,
        "buttons": submit_buttons(form_class),
        "next": safe_next_url(request, next_url) or safe_next_url(request, here) or "",
        "next_field": NEXT_FIELD,
        "key_field": IDEMPOTENCY_KEY_FIELD,
        "idempotency_key": make_idempotency_key(run_id, stream_id, form_name),
        # The form follows its run (trigger-django.js): closed once the run has finished.
        "run_ticket": make_ticket(user_pk=_user_pk(request), run_id=run_id, key=RUN_WIDE),
        # Closed already when the page's {% run_status %} found the run finished: then the page
        # needs no socket for it.
        "finished": _finished_label(run_id),
    }
    if csrf_token is None and request is not None:
        csrf_token = get_token(request)
    if csrf_token is not None:
        context["csrf_token"] = csrf_token
    return SafeString(render_to_string("trigger_django/approval_form.html", context).strip())
