"""A strict Content Security Policy on every page of the example project.

It shows that trigger_django needs no inline script or style: ``{% trigger_django_script %}``
puts ``request.csp_nonce`` on its tags, and nothing else runs. (Django 6 has CSP built in;
this small middleware keeps the example the same on Django 5.2.)
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        nonce = secrets.token_urlsafe(18)
        request.csp_nonce = nonce  # type: ignore[attr-defined]
        response = self.get_response(request)
        response.setdefault(
            "Content-Security-Policy",
            f"default-src 'self'; script-src 'self' 'nonce-{nonce}'; "
            f"style-src 'self' 'nonce-{nonce}'; img-src 'self' data:; connect-src 'self'; "
            "base-uri 'none'; object-src 'none'; "
            "form-action 'self'; frame-ancestors 'none'",
        )
        return response
