"""The example project: ask the demo AI writer a question and watch the answer stream in.

Plain sync views. A run is started with ``trigger_django.tasks.trigger`` and recorded with its
owner (``AiRun``); the permission hook (``example_project.permissions.owns_run``) lets only
that user watch and answer it.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse

from example_project.models import AiRun
from example_project.streams import ai_output, approval
from trigger_django.client import TriggerError
from trigger_django.tasks import trigger
from trigger_django.tickets import check_authorized, validate_run_id
from trigger_django.upstream import UpstreamConfigurationError

DEMO_TASK = "demo-ai-writer"
#: The second demo: an agent that calls a weather tool (AI SDK parts, shown by {% run_viewer %}).
WEATHER_TASK = "demo-weather-agent"
MAX_CITY_LENGTH = 80
MAX_PROMPT_LENGTH = 500
#: The answer's stream stays open until it has been idle this long (the hook's
#: ``timeoutInSeconds``); ``?timeout=N`` on a run page overrides it (1-600).
DEFAULT_STREAM_TIMEOUT = 60
#: The answer is markdown, rendered like the React docs' ``<Streamdown>``; ``?render=text``
#: shows the raw text instead.
RENDER_MODES = ("markdown", "text")
RECENT_RUNS = 5


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """A plain form POST, so it works without JavaScript: trigger, record, show the run."""
    if request.method == "POST" and request.POST.get("task") == "weather":
        return start_weather_agent(request)
    if request.method == "POST":
        prompt = request.POST.get("prompt", "").strip()[:MAX_PROMPT_LENGTH]
        if not prompt:
            messages.error(request, "Ask a question first.")
            return HttpResponseRedirect(reverse("home"))
        try:
            handle = trigger(DEMO_TASK, {"prompt": prompt}, tags=[f"user_{request.user.pk}"])
        except (TriggerError, UpstreamConfigurationError) as exc:
            messages.error(request, f"Could not start the AI writer: {exc}")
            return HttpResponseRedirect(reverse("home"))
        AiRun.objects.create(run_id=handle.id, owner=request.user, prompt=prompt)
        return HttpResponseRedirect(reverse("run", args=[handle.id]))
    recent = AiRun.objects.filter(owner=request.user)[:RECENT_RUNS]
    return render(
        request,
        "home.html",
        {
            "max_prompt_length": MAX_PROMPT_LENGTH,
            "max_city_length": MAX_CITY_LENGTH,
            "recent_runs": recent,
        },
    )


def start_weather_agent(request: HttpRequest) -> HttpResponse:
    city = " ".join(request.POST.get("city", "").split())[:MAX_CITY_LENGTH]
    if not city:
        messages.error(request, "Name a city first.")
        return HttpResponseRedirect(reverse("home"))
    try:
        handle = trigger(WEATHER_TASK, {"city": city}, tags=[f"user_{request.user.pk}"])
    except (TriggerError, UpstreamConfigurationError) as exc:
        messages.error(request, f"Could not start the weather agent: {exc}")
        return HttpResponseRedirect(reverse("home"))
    AiRun.objects.create(
        run_id=handle.id, owner=request.user, prompt=f"Weather in {city}", task=WEATHER_TASK
    )
    return HttpResponseRedirect(reverse("run", args=[handle.id]))


@login_required
def run_detail(request: HttpRequest, run_id: str) -> HttpResponse:
    try:
        validate_run_id(run_id)
    except ValueError:
        raise Http404("No such run.") from None
    # The same hook the stream consumer and the send view ask: a foreign run is not found.
    if not async_to_sync(check_authorized)(request.user, run_id, "read"):
        raise Http404("No such run.")
    try:
        timeout = min(max(int(request.GET.get("timeout", DEFAULT_STREAM_TIMEOUT)), 1), 600)
    except ValueError:
        timeout = DEFAULT_STREAM_TIMEOUT
    render_mode = request.GET.get("render", RENDER_MODES[0])
    if render_mode not in RENDER_MODES:
        render_mode = RENDER_MODES[0]
    record = AiRun.objects.filter(run_id=run_id).first()
    if record is not None and record.task == WEATHER_TASK:
        return render(request, "weather_run.html", {"run": {"id": run_id}, "record": record})
    return render(
        request,
        "run.html",
        {
            "run": {"id": run_id},
            "timeout": timeout,
            "render_mode": render_mode,
            "ai_output": ai_output,
            "approval": approval,
        },
    )


class LoginView(auth_views.LoginView):
    """Django's login view; under ``make demo`` the page names the demo account."""

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["demo_login"] = getattr(settings, "EXAMPLE_DEMO_LOGIN", None)
        return context
