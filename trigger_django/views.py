"""HTTP views of trigger_django.

Every failure is answered through :func:`trigger_django.errors.describe` (one status and one
message per kind of error, naming the party at fault) and logged by
:func:`trigger_django.errors.log_failure`, which clears the traceback's local variables first:
no debug page, log handler or error tracker ever sees a token minted here.
"""

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
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_POST

from trigger_django.conf import get_config
from trigger_django.errors import RequestError, TriggerDjangoError, describe, log_failure
from trigger_django.forms import (
    IDEMPOTENCY_KEY_FIELD,
    IDEMPOTENCY_KEY_MAX_AGE,
    NEXT_FIELD,
    UnknownInputForm,
    build_payload,
    form_class_for_stream,
    read_idempotency_key,
    registered_input_form,
    safe_next_url,
    success_message,
)
from trigger_django.signals import input_sent
from trigger_django.tickets import check_authorized, validate_run_id, validate_stream_key
from trigger_django.upstream import get_client, mint_public_token

__all__ = ["send_input_view", "token_view"]

logger = logging.getLogger("trigger_django.views")


def _wants_html(request: HttpRequest) -> bool:
    return "text/html" in request.headers.get("Accept", "")


@require_POST
@sensitive_variables("token")
async def token_view(request: HttpRequest, run_id: str) -> HttpResponse:
    """Mint a public access token that can read one run (``read:runs:<run_id>``), for pages
    that use the official JS client instead of the template tags.

    ``POST``, CSRF-protected (send ``X-CSRFToken``), login required, and the ``AUTHORIZE`` hook
    must allow ``read``. Answers ``{"token": "...", "expiresAt": <epoch seconds>}``, or
    ``{"error": "..."}`` with the status :func:`~trigger_django.errors.describe` gives.
    """
    user = await request.auser()
    if not user.is_authenticated:
        if _wants_html(request):
            return redirect_to_login(request.get_full_path())
        return JsonResponse({"error": "Authentication required."}, status=401)
    try:
        validate_run_id(run_id)
        if not await check_authorized(user, run_id, "read"):
            raise RequestError(f"You may not read run {run_id}.", status=403)
        token, expires_at = await mint_public_token([f"read:runs:{run_id}"])
        response = JsonResponse({"token": token, "expiresAt": expires_at})
    except Exception as exc:
        error = describe(exc)
        log_failure(logger, exc, error)
        return JsonResponse({"error": error.message}, status=error.status)
    finally:
        token = ""  # not left in a frame that a traceback keeps alive
    response["Cache-Control"] = "no-store"
    return response


# --- Input streams: the send endpoint behind {% approval_form %} (docs/input-streams.md) ---------

input_logger = logging.getLogger("trigger_django.input")

#: Room for the form's own envelope (CSRF token, next, idempotency key) around the input itself.
_ENVELOPE_BYTES = 8 * 1024


def _wants_json(request: HttpRequest) -> bool:
    if request.content_type == "application/json":
        return True
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


def _check_body_size(request: HttpRequest) -> bytes:
    """The request body, or 413 when it is over the input limit (checked before it is read)."""
    limit = get_config().max_input_bytes + _ENVELOPE_BYTES
    too_big = RequestError(
        f"The input is too large: at most {get_config().max_input_bytes} bytes are accepted.",
        status=413,
    )
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        raise RequestError("The Content-Length header is not a number.") from None
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
            raise RequestError(f"The form could not be read: {exc}") from None
        return post, post.get(IDEMPOTENCY_KEY_FIELD) or None, post.get(NEXT_FIELD) or None
    try:
        document = json.loads(body)
    except ValueError:
        raise RequestError("The request body is not valid JSON.") from None
    except RecursionError:
        raise RequestError("The request body is nested too deeply to be read.") from None
    if not isinstance(document, dict) or not isinstance(document.get("data"), dict):
        raise RequestError(
            'Send a JSON object of the form {"data": {...}}, with the input\'s fields in "data".'
        )
    key = document.get(IDEMPOTENCY_KEY_FIELD) or request.headers.get("Idempotency-Key") or None
    if key is not None and not isinstance(key, str):
        raise RequestError(f'"{IDEMPOTENCY_KEY_FIELD}" must be the string the form carried.')
    next_url = document.get(NEXT_FIELD)
    return document["data"], key, next_url if isinstance(next_url, str) else None


def _back_to(request: HttpRequest, next_url: str | None) -> str:
    return (
        safe_next_url(request, next_url)
        or safe_next_url(request, request.headers.get("Referer"))
        or "/"
    )


@csrf_exempt  # CSRF is checked in the view, after the size limit (see _check_csrf)
@require_POST
@sensitive_post_parameters("csrfmiddlewaretoken", IDEMPOTENCY_KEY_FIELD)
async def send_input_view(request: HttpRequest, run_id: str, stream_id: str) -> HttpResponse:
    """Send input to ``stream_id`` of ``run_id``: what ``{% approval_form %}`` posts to.

    Accepts the rendered form (``application/x-www-form-urlencoded``, then redirects back with a
    Django message) or ``application/json`` ``{"data": {...}}`` (answers JSON). Login, CSRF and
    the ``AUTHORIZE`` hook (action ``"write"``) are required; the payload is validated by the
    stream's form, server fields are filled from ``request.user``, and a form's idempotency key
    sends at most once. Every failure, an unexpected one too, is answered with the status and
    message :func:`~trigger_django.errors.describe` gives.
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
        validate_run_id(run_id)
        validate_stream_key(stream_id)
        if not await check_authorized(user, run_id, "write"):
            raise RequestError(f"You may not send input to run {run_id}.", status=403)
        response = await _send_input(request, run_id, stream_id, client_data, key)
    except Exception as exc:
        error = describe(exc)
        log_failure(input_logger, exc, error)
        fields = exc.fields if isinstance(exc, TriggerDjangoError) else None
        if wants_json:
            content: dict[str, Any] = {"ok": False, "error": error.message}
            if fields is not None:
                content["fields"] = fields
            return JsonResponse(content, status=error.status)
        text = error.message
        if fields:
            text += " " + " ".join(
                f"{name}: {' '.join(messages_)}" for name, messages_ in fields.items()
            )
        messages.error(request, text)
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
            raise RequestError(
                "This form is already being sent; reload the page in a moment to see it.",
                status=409,
            )
        await asyncio.sleep(_DUPLICATE_POLL_SECONDS)


@sensitive_variables("token")
async def _forward(run_id: str, stream_id: str, payload: dict[str, Any]) -> None:
    """Mint a token that can write this run's input streams (60 s) and send ``payload``."""
    token, _ = await mint_public_token([f"write:inputStreams:{run_id}"], ttl=60)
    try:
        await get_client(access_token=token).send_input(run_id, stream_id, payload)
    finally:
        token = ""  # not left in a frame that a traceback keeps alive


async def _send_input(
    request: HttpRequest,
    run_id: str,
    stream_id: str,
    client_data: Mapping[str, Any],
    key: str | None,
) -> dict[str, Any]:
    nonce: str | None = None
    form_name: str | None = None
    if key is not None:
        parsed = read_idempotency_key(key, run_id, stream_id)
        nonce, form_name = parsed.nonce, parsed.form_name
    if key is None and stream_id not in get_config().input_forms:
        # Without the rendered form's signed key the client would choose the validation (the
        # default form instead of the page's): the server must name the form for this stream.
        raise RequestError(
            f"Sends to input stream {stream_id!r} need the rendered form's idempotency_key, or "
            f"the stream listed in TRIGGER_DJANGO['INPUT_FORMS'] for programmatic sends."
        )
    if form_name is None:
        form_class = form_class_for_stream(stream_id)
    else:
        # Only a registered form: the key names one, it never makes the server import a path.
        try:
            form_class = registered_input_form(form_name)
        except UnknownInputForm:
            input_logger.warning(
                "A form key for stream %r of run %s names %r, which is not a registered input "
                "form: a forged key, or a form this process has not registered (list it in "
                "INPUT_FORMS or define its InputStream at import time).",
                stream_id,
                run_id,
                form_name,
            )
            raise
    # Forms may touch the database (ModelChoiceField, server_data): validate in a thread.
    form, payload = await sync_to_async(build_payload)(form_class, client_data, request)
    if payload is None:
        fields = {name: [str(error) for error in errors] for name, errors in form.errors.items()}
        raise RequestError("The input is not valid.", fields=fields)
    limit = get_config().max_input_bytes
    if len(json.dumps({"data": payload}, separators=(",", ":")).encode()) > limit:
        raise RequestError(
            f"The input is too large: at most {limit} bytes are accepted.", status=413
        )

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
        await _forward(run_id, stream_id, payload)
    except BaseException:
        # Not sent (an upstream error, or the request was cancelled): release the key so the
        # same form can try again instead of waiting for a send that will never finish.
        if nonce is not None:
            await asyncio.shield(cache.adelete(cache_key))
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
