"""HTTP views of trigger_django."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.cache import cache
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from trigger_django.client import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RunCompletedError,
    TriggerError,
)
from trigger_django.conf import get_config
from trigger_django.forms import (
    IDEMPOTENCY_KEY_FIELD,
    IDEMPOTENCY_KEY_MAX_AGE,
    NEXT_FIELD,
    InvalidIdempotencyKey,
    build_payload,
    form_class_for_stream,
    read_idempotency_key,
    safe_next_url,
    success_message,
)
from trigger_django.signals import input_sent
from trigger_django.tickets import check_authorized, validate_run_id, validate_stream_key
from trigger_django.upstream import UpstreamConfigurationError, get_client, mint_public_token

__all__ = ["send_input_view", "token_view"]


def _wants_html(request: HttpRequest) -> bool:
    return "text/html" in request.headers.get("Accept", "")


@require_POST
async def token_view(request: HttpRequest, run_id: str) -> HttpResponse:
    """Mint a public access token that can read one run (``read:runs:<run_id>``), for pages
    that use the official JS client instead of the template tags.

    ``POST``, CSRF-protected (send ``X-CSRFToken``), login required, and the ``AUTHORIZE`` hook
    must allow ``read``. Answers ``{"token": "...", "expiresAt": <epoch seconds>}``.
    """
    user = await request.auser()
    if not user.is_authenticated:
        if _wants_html(request):
            return redirect_to_login(request.get_full_path())
        return JsonResponse({"error": "Authentication required."}, status=401)
    try:
        validate_run_id(run_id)
    except ValueError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    if not await check_authorized(user, run_id, "read"):
        return JsonResponse({"error": f"You may not read run {run_id}."}, status=403)
    try:
        token, expires_at = await mint_public_token([f"read:runs:{run_id}"])
    except UpstreamConfigurationError as exc:
        return JsonResponse({"error": str(exc)}, status=503)
    response = JsonResponse({"token": token, "expiresAt": expires_at})
    response["Cache-Control"] = "no-store"
    return response


# --- Input streams: the send endpoint behind {% approval_form %} (docs/input-streams.md) ---------

input_logger = logging.getLogger("trigger_django.input")

#: Room for the form's own envelope (CSRF token, next, idempotency key) around the input itself.
_ENVELOPE_BYTES = 8 * 1024


class _SendFailure(Exception):
    """Ends the send view with ``status`` and a message for the person who pressed the button."""

    def __init__(
        self, status: int, message: str, fields: dict[str, list[str]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = fields


def _wants_json(request: HttpRequest) -> bool:
    if request.content_type == "application/json":
        return True
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


def _check_body_size(request: HttpRequest) -> bytes:
    """The request body, or 413 when it is over the input limit (checked before it is read)."""
    limit = get_config().max_input_bytes + _ENVELOPE_BYTES
    too_big = _SendFailure(
        413, f"The input is too large: at most {get_config().max_input_bytes} bytes are accepted."
    )
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        raise _SendFailure(400, "The Content-Length header is not a number.") from None
    if declared > limit:
        raise too_big
    try:
        # Django refuses bodies over DATA_UPLOAD_MAX_MEMORY_SIZE itself (with a 400); here that
        # is the same case as ours, so it gets the same 413.
        body = request.body
    except RequestDataTooBig:
        raise too_big from None
    if len(body) > limit:  # Content-Length absent or understated (chunked uploads)
        raise too_big
    return body


def _check_csrf(request: HttpRequest) -> HttpResponse | None:
    """Django's CSRF check, run after the size check so an oversized body gets a 413."""
    middleware = CsrfViewMiddleware(lambda request: HttpResponse())
    middleware.process_request(request)
    rejection = middleware.process_view(request, None, (), {})  # type: ignore[arg-type]
    if rejection is not None and _wants_json(request):
        return JsonResponse(
            {"error": "CSRF verification failed: reload the page and try again."}, status=403
        )
    return rejection


def _read_input(
    request: HttpRequest, body: bytes
) -> tuple[Mapping[str, Any], str | None, str | None]:
    """``(client data, idempotency key, next url)`` from a form post or a JSON body."""
    if request.content_type != "application/json":
        try:
            post = request.POST
        except (TooManyFieldsSent, RequestDataTooBig) as exc:
            raise _SendFailure(400, f"The form could not be read: {exc}") from None
        return post, post.get(IDEMPOTENCY_KEY_FIELD) or None, post.get(NEXT_FIELD) or None
    try:
        document = json.loads(body)
    except ValueError:
        raise _SendFailure(400, "The request body is not valid JSON.") from None
    if not isinstance(document, dict) or not isinstance(document.get("data"), dict):
        raise _SendFailure(
            400,
            'Send a JSON object of the form {"data": {...}}, with the input\'s fields in "data".',
        )
    key = document.get(IDEMPOTENCY_KEY_FIELD) or request.headers.get("Idempotency-Key") or None
    if key is not None and not isinstance(key, str):
        raise _SendFailure(400, f'"{IDEMPOTENCY_KEY_FIELD}" must be the string the form carried.')
    next_url = document.get(NEXT_FIELD)
    return document["data"], key, next_url if isinstance(next_url, str) else None


def _upstream_failure(exc: Exception, run_id: str, stream_id: str) -> _SendFailure:
    """A clear message and status for what Trigger.dev (or the way to it) answered."""
    if isinstance(exc, RunCompletedError):
        return _SendFailure(400, f"Run {run_id} has already finished; it no longer accepts input.")
    if isinstance(exc, NotFoundError):
        return _SendFailure(404, f"Run {run_id} was not found on Trigger.dev.")
    if isinstance(exc, PayloadTooLargeError):
        return _SendFailure(413, "Trigger.dev refused the input as too large (the limit is 1 MiB).")
    if isinstance(exc, AuthenticationError | PermissionDeniedError | UpstreamConfigurationError):
        input_logger.error("Trigger.dev refused the server's credentials: %s", exc)
        return _SendFailure(
            502,
            "This server's Trigger.dev credentials were refused, so the input could not be sent. "
            "The site's administrators must fix the Trigger.dev secret key.",
        )
    if isinstance(exc, BadRequestError):
        return _SendFailure(400, f"Trigger.dev refused the input: {exc.message or 'bad request'}.")
    if isinstance(exc, APIStatusError):
        return _SendFailure(502, f"Trigger.dev answered {exc.status}: {exc.message or 'error'}.")
    input_logger.warning("Sending to %s of run %s failed: %s", stream_id, run_id, exc)
    return _SendFailure(503, "Trigger.dev could not be reached; try again in a moment.")


def _back_to(request: HttpRequest, next_url: str | None) -> str:
    return (
        safe_next_url(request, next_url)
        or safe_next_url(request, request.headers.get("Referer"))
        or "/"
    )


@csrf_exempt  # CSRF is checked in the view, after the size limit (see _check_csrf)
@require_POST
async def send_input_view(request: HttpRequest, run_id: str, stream_id: str) -> HttpResponse:
    """Send input to ``stream_id`` of ``run_id``: what ``{% approval_form %}`` posts to.

    Accepts the rendered form (``application/x-www-form-urlencoded``, then redirects back with a
    Django message) or ``application/json`` ``{"data": {...}}`` (answers JSON). Login, CSRF and
    the ``AUTHORIZE`` hook (action ``"write"``) are required; the payload is validated by the
    stream's form, server fields are filled from ``request.user``, and a form's idempotency key
    sends at most once.
    """
    wants_json = _wants_json(request)
    next_url: str | None = None
    try:
        body = _check_body_size(request)
        # The check may read the session (CSRF_USE_SESSIONS): not from the event loop.
        rejection = await sync_to_async(_check_csrf)(request)
        if rejection is not None:
            return rejection
        client_data, key, next_url = _read_input(request, body)
        user = await request.auser()
        if not user.is_authenticated:
            if wants_json:
                return JsonResponse({"error": "Log in to send input to a run."}, status=401)
            return redirect_to_login(_back_to(request, next_url))
        request.user = user  # server fields read it; no second lazy lookup in a thread
        try:
            validate_run_id(run_id)
            validate_stream_key(stream_id)
        except ValueError as exc:
            raise _SendFailure(400, str(exc)) from None
        if not await check_authorized(user, run_id, "write"):
            raise _SendFailure(403, f"You may not send input to run {run_id}.")
        response = await _send_input(request, run_id, stream_id, client_data, key)
    except _SendFailure as failure:
        if wants_json:
            content: dict[str, Any] = {"ok": False, "error": failure.message}
            if failure.fields is not None:
                content["fields"] = failure.fields
            return JsonResponse(content, status=failure.status)
        error = failure.message
        if failure.fields:
            error += " " + " ".join(
                f"{name}: {' '.join(messages_)}" for name, messages_ in failure.fields.items()
            )
        messages.error(request, error)
        return HttpResponseRedirect(_back_to(request, next_url))
    if wants_json:
        return JsonResponse(response)
    messages.success(request, response["message"])
    return HttpResponseRedirect(_back_to(request, next_url))


_SENDING = "sending"
#: How long a second submit of a form waits for the first one's outcome before giving up.
_DUPLICATE_WAIT_SECONDS = 15.0
_DUPLICATE_POLL_SECONDS = 0.05


async def _claim_idempotency_key(cache_key: str) -> dict[str, Any] | None:
    """``None`` when this request may send; otherwise what the earlier send of the same form
    answered. While that send is still in flight, wait for it: if it fails, its key is released
    and this request sends instead, so a double click never turns a failure into a success."""
    deadline = asyncio.get_running_loop().time() + _DUPLICATE_WAIT_SECONDS
    while True:
        if await cache.aadd(cache_key, _SENDING, timeout=IDEMPOTENCY_KEY_MAX_AGE):
            return None
        earlier = await cache.aget(cache_key)
        if isinstance(earlier, dict):
            return earlier
        if asyncio.get_running_loop().time() > deadline:
            raise _SendFailure(
                409, "This form is already being sent; reload the page in a moment to see it."
            )
        await asyncio.sleep(_DUPLICATE_POLL_SECONDS)


async def _send_input(
    request: HttpRequest,
    run_id: str,
    stream_id: str,
    client_data: Mapping[str, Any],
    key: str | None,
) -> dict[str, Any]:
    nonce: str | None = None
    form_path: str | None = None
    if key is not None:
        try:
            parsed = read_idempotency_key(key, run_id, stream_id)
        except InvalidIdempotencyKey as exc:
            raise _SendFailure(400, str(exc)) from None
        nonce, form_path = parsed.nonce, parsed.form_path
    if key is None and stream_id not in get_config().input_forms:
        # Without the rendered form's signed key the client would choose the validation (the
        # default form instead of the page's): the server must name the form for this stream.
        raise _SendFailure(
            400,
            f"Sends to input stream {stream_id!r} need the rendered form's idempotency_key, or "
            f"the stream listed in TRIGGER_DJANGO['INPUT_FORMS'] for programmatic sends.",
        )
    form_class = form_class_for_stream(stream_id, form_path)
    # Forms may touch the database (ModelChoiceField, server_data): validate in a thread.
    form, payload = await sync_to_async(build_payload)(form_class, client_data, request)
    if payload is None:
        fields = {name: [str(error) for error in errors] for name, errors in form.errors.items()}
        raise _SendFailure(400, "The input is not valid.", fields)
    limit = get_config().max_input_bytes
    if len(json.dumps({"data": payload}, separators=(",", ":")).encode()) > limit:
        raise _SendFailure(413, f"The input is too large: at most {limit} bytes are accepted.")

    message = success_message(form)
    result = {"ok": True, "message": message, "runId": run_id, "streamId": stream_id}
    # Bound to the user too: a page cached for several users must not answer one user's send
    # with another's.
    cache_key = f"trigger_django:input:{request.user.pk}:{run_id}:{stream_id}:{nonce}"
    if nonce is not None:
        earlier = await _claim_idempotency_key(cache_key)
        if earlier is not None:
            # The same rendered form was sent before (a double click, a resubmitted page):
            # answer what that send answered, without sending again.
            return {**result, **earlier, "duplicate": True}

    try:
        token, _ = await mint_public_token([f"write:inputStreams:{run_id}"], ttl=60)
        await get_client(access_token=token).send_input(run_id, stream_id, payload)
    except BaseException as exc:
        # Not sent (an upstream error, or the request was cancelled): release the key so the
        # same form can try again instead of waiting for a send that will never finish.
        if nonce is not None:
            await asyncio.shield(cache.adelete(cache_key))
        if isinstance(exc, TriggerError | UpstreamConfigurationError):
            raise _upstream_failure(exc, run_id, stream_id) from exc
        raise
    if nonce is not None:
        sent = {"message": message, "data": payload}
        await cache.aset(cache_key, sent, timeout=IDEMPOTENCY_KEY_MAX_AGE)

    user = request.user
    input_logger.info(
        "%s sent input to stream %r of run %s: %.500s",
        user.get_username(),
        stream_id,
        run_id,
        json.dumps(payload),
    )
    for receiver, outcome in await input_sent.asend_robust(
        sender=form_class, user=user, run_id=run_id, stream_id=stream_id, data=payload
    ):
        if isinstance(outcome, Exception):
            input_logger.error("input_sent receiver %r failed", receiver, exc_info=outcome)
    return {**result, "data": payload}
