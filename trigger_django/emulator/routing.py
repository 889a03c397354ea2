"""Routing: a table of path patterns, each with a handler per method, and what a handler gets.

Patterns are matched segment by segment (empty segments ignored, as the server's router does);
``{name}`` matches any one segment and is passed as ``call.params["name"]``. The first pattern
that matches the path decides: a method it has no handler for is ``404`` (the method ``"*"``
takes every method).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from trigger_django.emulator.auth import Credentials, authenticate, authorized
from trigger_django.emulator.http import Request, Response, not_found, unauthorized
from trigger_django.emulator.state import EmulatorConfig, EmulatorState, Run

ANY_METHOD = "*"


@dataclass(slots=True)
class Call:
    """One request as a handler sees it."""

    config: EmulatorConfig
    state: EmulatorState
    request: Request
    response: Response
    #: The bearer token, if any (not yet checked: handlers authenticate as their route needs).
    token: str | None
    params: dict[str, str] = field(default_factory=dict)

    def secret_only(self) -> Credentials:
        """Authenticate a route that takes API keys only (a JWT is an unknown key: 401)."""
        return authenticate(self.token, self.config.secret_key, allow_jwt=False)

    def credentials(self) -> Credentials:
        """Authenticate a route that also takes public JWTs (``allowJWT``)."""
        return authenticate(self.token, self.config.secret_key, allow_jwt=True)

    def run_or_404(self, run_id: str) -> Run:
        run = self.state.runs.get(run_id)
        if run is None:
            raise not_found()
        return run


def authorize_read(credentials: Credentials, run: Run) -> None:
    """The read check of the run, stream and shape routes (§4.3)."""
    resources = [("runs", run.id), ("tasks", run.task_identifier)]
    resources += [("tags", tag) for tag in run.tags]
    if not authorized(credentials, "read", resources):
        raise unauthorized()


Handler = Callable[[Call], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Route:
    pattern: str
    handlers: Mapping[str, Handler]
    segments: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "segments", tuple(part for part in self.pattern.split("/") if part)
        )

    def match(self, segments: list[str]) -> dict[str, str] | None:
        if len(segments) != len(self.segments):
            return None
        params: dict[str, str] = {}
        for pattern, segment in zip(self.segments, segments, strict=True):
            if pattern.startswith("{") and pattern.endswith("}"):
                params[pattern[1:-1]] = segment
            elif pattern != segment:
                return None
        return params


def route(pattern: str, **handlers: Handler) -> Route:
    """``route("/api/v1/tasks/{task}/trigger", POST=trigger)``; ``ANY=`` for every method."""
    methods = {
        (ANY_METHOD if name == "ANY" else name): handler for name, handler in handlers.items()
    }
    return Route(pattern, methods)


class Router:
    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = tuple(routes)

    def resolve(self, method: str, path: str) -> tuple[Handler, dict[str, str]] | None:
        """The handler and path parameters for a request, or ``None`` when no route matches."""
        segments = [segment for segment in path.split("/") if segment]
        for candidate in self.routes:
            params = candidate.match(segments)
            if params is None:
                continue
            handler = candidate.handlers.get(method) or candidate.handlers.get(ANY_METHOD)
            if handler is None:
                raise not_found()
            return handler, params
        return None
