"""The example project: ask the demo AI writer a question and watch the answer stream in.

Plain sync views: templates, sessions and messages touch the database lazily, which Django
forbids from an async context. The upstream calls are async and run through ``async_to_sync``.
"""

from __future__ import annotations

from asgiref.sync import async_to_sync
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse

from trigger_django.client import RunHandle, TriggerError
from trigger_django.tickets import check_authorized, validate_run_id
from trigger_django.upstream import get_client

DEMO_TASK = "demo-ai-writer"
MAX_PROMPT_LENGTH = 500
#: The answer's stream stays open until it has been idle this long (the hook's
#: ``timeoutInSeconds``); ``?timeout=N`` on a run page overrides it (1-600).
DEFAULT_STREAM_TIMEOUT = 60
#: The answer is markdown, rendered like the React docs' ``<Streamdown>``; ``?render=text``
#: shows the raw text instead.
RENDER_MODES = ("markdown", "text")


async def _trigger_demo(prompt: str) -> RunHandle:
    return await get_client().trigger(DEMO_TASK, {"prompt": prompt})


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """A plain form POST, so it works without JavaScript: trigger, then show the run."""
    if request.method == "POST":
        prompt = request.POST.get("prompt", "").strip()[:MAX_PROMPT_LENGTH]
        if not prompt:
            messages.error(request, "Ask a question first.")
            return HttpResponseRedirect(reverse("home"))
        try:
            handle = async_to_sync(_trigger_demo)(prompt)
        except TriggerError as exc:
            messages.error(request, f"Could not start the AI writer: {exc}")
            return HttpResponseRedirect(reverse("home"))
        return HttpResponseRedirect(reverse("run", args=[handle.id]))
    return render(request, "home.html", {"max_prompt_length": MAX_PROMPT_LENGTH})


@login_required
def run_detail(request: HttpRequest, run_id: str) -> HttpResponse:
    try:
        validate_run_id(run_id)
    except ValueError:
        raise Http404("No such run.") from None
    if not async_to_sync(check_authorized)(request.user, run_id, "read"):
        raise Http404("No such run.")
    try:
        timeout = min(max(int(request.GET.get("timeout", DEFAULT_STREAM_TIMEOUT)), 1), 600)
    except ValueError:
        timeout = DEFAULT_STREAM_TIMEOUT
    render_mode = request.GET.get("render", RENDER_MODES[0])
    if render_mode not in RENDER_MODES:
        render_mode = RENDER_MODES[0]
    return render(
        request,
        "run.html",
        {"run": {"id": run_id}, "timeout": timeout, "render_mode": render_mode},
    )
