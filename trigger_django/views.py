"""HTTP views of trigger_django."""

from __future__ import annotations

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_POST

from trigger_django.tickets import check_authorized, validate_run_id
from trigger_django.upstream import UpstreamConfigurationError, mint_public_token

__all__ = ["token_view"]


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
