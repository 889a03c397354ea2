"""{% trigger_django_script %} and {% stream_viewer %}: exact HTML, valid HTML, no secrets."""

from __future__ import annotations

import base64
import re
import time
import zlib
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jwt
import pytest
from django.conf import settings
from django.template import Context, Template, TemplateSyntaxError
from django.test import override_settings

from trigger_django.streams import OutputStream
from trigger_django.tickets import TicketError, load_ticket, make_ticket

SECRET = settings.TEST_TRIGGER_SECRET_KEY
TICKET_RE = re.compile(r'data-ticket="([^"]+)"')
VOID_ELEMENTS = {"link", "meta", "input", "br", "img", "hr"}


def render(source: str, **context: Any) -> str:
    return Template("{% load trigger_django %}" + source).render(Context(context))


def sign(scopes: list[str], *, key: str = SECRET, exp: int | None = None) -> str:
    now = int(time.time())
    return jwt.encode(
        {
            "sub": "env_1",
            "pub": True,
            "scopes": scopes,
            "iss": "https://id.trigger.dev",
            "aud": "https://api.trigger.dev",
            "iat": now,
            "exp": exp or now + 3600,
        },
        key,
        algorithm="HS256",
    )


class TreeChecker(HTMLParser):
    """Parses HTML and records every element; fails on unbalanced tags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        if tag not in VOID_ELEMENTS:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack, f"stray </{tag}>"
        assert self.stack.pop() == tag, f"</{tag}> closes the wrong element"

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> TreeChecker:
    checker = TreeChecker()
    checker.feed(html)
    checker.close()
    assert checker.stack == [], f"unclosed elements: {checker.stack}"
    return checker


def ticket_payload(ticket: str) -> bytes:
    """The raw (signed, not encrypted) payload of a ticket, as anyone reading the page can."""
    data = ticket.split(":", 1)[0]
    compressed = data.startswith(".")
    raw = base64.urlsafe_b64decode(data.lstrip(".") + "=" * (-len(data.lstrip(".")) % 4))
    return zlib.decompress(raw) if compressed else raw


def split_ticket(html: str) -> tuple[str, str]:
    match = TICKET_RE.search(html)
    assert match is not None
    return TICKET_RE.sub('data-ticket="TICKET"', html), match.group(1)


# -- {% trigger_django_script %} ----------------------------------------------------------------


def test_script_tags_exact() -> None:
    assert render("{% trigger_django_script %}") == (
        '<link rel="stylesheet" href="/static/trigger_django/trigger-django.css">\n'
        '<script src="/static/trigger_django/trigger-django.js" defer '
        'data-ws-path="/trigger/ws/"></script>\n'
        '<script src="/static/trigger_django/trigger-django-forms.js" defer></script>'
    )


def test_script_tags_carry_the_context_csp_nonce() -> None:
    html = render("{% trigger_django_script %}", csp_nonce="n0nce+/=")
    assert html == (
        '<link rel="stylesheet" href="/static/trigger_django/trigger-django.css" '
        'nonce="n0nce+/=">\n'
        '<script src="/static/trigger_django/trigger-django.js" defer '
        'data-ws-path="/trigger/ws/" nonce="n0nce+/="></script>\n'
        '<script src="/static/trigger_django/trigger-django-forms.js" defer '
        'nonce="n0nce+/="></script>'
    )
    assert [attrs.get("nonce") for _, attrs in parse(html).elements] == ["n0nce+/="] * 3


def test_script_tags_carry_the_request_csp_nonce_escaped() -> None:
    request = SimpleNamespace(csp_nonce='a"b')
    html = render("{% trigger_django_script %}", request=request)
    assert 'nonce="a&quot;b"' in html
    assert [attrs.get("nonce") for _, attrs in parse(html).elements] == ['a"b'] * 3


@override_settings(TRIGGER_DJANGO={"SECRET_KEY": SECRET, "WEBSOCKET_PATH": "/live/socket/"})
def test_script_ws_path_follows_the_setting() -> None:
    elements = parse(render("{% trigger_django_script %}")).elements
    assert elements[1][1]["data-ws-path"] == "/live/socket/"


# -- {% stream_viewer %} ------------------------------------------------------------------------

EXPECTED_VIEWER = (
    '<div class="trigger-stream" data-trigger-stream data-state="connecting" '
    'data-ticket="TICKET" data-run-id="run_abc123" data-key="ai-output" data-timeout="60" '
    'data-throttle-ms="16">\n'
    '<p class="trigger-stream__status" data-trigger-status>Loading…</p>\n'
    '<div class="trigger-stream__output" data-trigger-output role="log" '
    'aria-label="Stream output" aria-busy="true"></div>\n'
    '<p class="trigger-stream__announce" data-trigger-announce role="status"></p>\n'
    '<p class="trigger-stream__error" data-trigger-error hidden></p>\n'
    '<noscript><p class="trigger-stream__noscript">This stream is still being written: reload '
    "the page to see more.</p></noscript>\n"
    "</div>"
)


@pytest.fixture(autouse=True)
def _no_snapshot_unless_asked(settings: Any) -> None:
    """The exact-HTML tests render with nothing upstream: no read at render time."""
    settings.TRIGGER_DJANGO = {**settings.TRIGGER_DJANGO, "SNAPSHOT_DEADLINE": 0}


def test_viewer_exact_html() -> None:
    html, ticket = split_ticket(render('{% stream_viewer "run_abc123" "ai-output" %}'))
    assert html == EXPECTED_VIEWER
    loaded = load_ticket(ticket)
    assert (loaded.run_id, loaded.key, loaded.user_pk, loaded.access_token) == (
        "run_abc123",
        "ai-output",
        None,
        None,
    )


def test_viewer_is_valid_html_with_config_in_data_attributes() -> None:
    checker = parse(render('{% stream_viewer "run_abc123" "ai-output" %}'))
    tag, attrs = checker.elements[0]
    assert tag == "div"
    assert attrs["data-state"] == "connecting"
    assert attrs["data-run-id"] == "run_abc123"
    assert "Loading…" in "".join(checker.text)
    assert not any(tag == "script" for tag, _ in checker.elements)


def test_viewer_default_key() -> None:
    html, ticket = split_ticket(render("{% stream_viewer run_id %}", run_id="run_abc123"))
    assert html == EXPECTED_VIEWER.replace('data-key="ai-output"', 'data-key="default"')
    assert load_ticket(ticket).key == "default"


def test_viewer_with_a_defined_stream() -> None:
    html, ticket = split_ticket(
        render(
            "{% stream_viewer ai_stream run_id %}",
            ai_stream=OutputStream("ai-output"),
            run_id="run_abc123",
        )
    )
    assert html == EXPECTED_VIEWER
    assert load_ticket(ticket).key == "ai-output"


def test_viewer_options() -> None:
    html, _ = split_ticket(
        render(
            '{% stream_viewer "run_abc123" "ai-output" timeout=5 start_index=3 throttle_ms=0 '
            'max_parts=100 id="answer" %}'
        )
    )
    assert html == EXPECTED_VIEWER.replace(
        '<div class="trigger-stream" data-trigger-stream',
        '<div class="trigger-stream" id="answer" data-trigger-stream',
    ).replace(
        'data-timeout="60" data-throttle-ms="16"',
        'data-timeout="5" data-start-index="3" data-throttle-ms="0" data-max-parts="100"',
    )


def test_viewer_markdown_exact_html() -> None:
    html, _ = split_ticket(render('{% stream_viewer "run_abc123" "ai-output" render="markdown" %}'))
    assert html == EXPECTED_VIEWER.replace(
        'data-throttle-ms="16">', 'data-throttle-ms="16" data-render="markdown">'
    ).replace(
        'aria-busy="true"></div>',
        'aria-busy="true"><div class="trigger-md__blocks" data-trigger-md-blocks></div>'
        '<div class="trigger-md__tail" data-trigger-md-tail></div></div>',
    )


def test_viewer_render_text_is_the_default_markup() -> None:
    html, _ = split_ticket(render('{% stream_viewer "run_abc123" "ai-output" render="text" %}'))
    assert html == EXPECTED_VIEWER


@override_settings(TRIGGER_DJANGO={"SECRET_KEY": SECRET, "TIMEOUT_SECONDS": 120, "THROTTLE_MS": 50})
def test_viewer_defaults_come_from_settings() -> None:
    attrs = parse(render('{% stream_viewer "run_abc123" %}')).elements[0][1]
    assert (attrs["data-timeout"], attrs["data-throttle-ms"]) == ("120", "50")


def test_viewer_escapes_the_element_id() -> None:
    html = render('{% stream_viewer "run_abc123" id=evil %}', evil='"><script>x</script>')
    assert "<script>" not in html
    assert parse(html).elements[0][1]["id"] == '"><script>x</script>'


@override_settings(
    TEMPLATES=[
        {
            **settings.TEMPLATES[0],
            "DIRS": [*settings.TEMPLATES[0]["DIRS"], Path(__file__).parent / "templates"],
        }
    ]
)
def test_viewer_with_another_partial() -> None:
    html, _ = split_ticket(
        render('{% stream_viewer "run_abc123" template="tests/custom_viewer.html" %}')
    )
    assert html == (
        '<section data-trigger-stream data-ticket="TICKET" data-run-id="run_abc123" '
        'data-key="default" data-timeout="60"><div data-trigger-output></div></section>'
    )


@pytest.mark.parametrize(
    ("source", "context", "message"),
    [
        ('{% stream_viewer "../etc" %}', {}, "Invalid run id '../etc'"),
        ('{% stream_viewer "run_1" "a/b" %}', {}, "Invalid stream key 'a/b'"),
        ("{% stream_viewer run_id %}", {"run_id": "run_1\n"}, "Invalid run id 'run_1\\n'"),
        ('{% stream_viewer "run_1" key %}', {"key": "k\n"}, "Invalid stream key 'k\\n'"),
        ('{% stream_viewer "run_1" timeout=0 %}', {}, "timeout= must be between 1 and 600, got 0"),
        ('{% stream_viewer "run_1" timeout="x" %}', {}, "timeout= must be an integer, got 'x'"),
        ('{% stream_viewer "run_1" max_parts=0 %}', {}, "max_parts= must be >= 1, got 0"),
        ("{% stream_viewer nothing %}", {"nothing": 42}, "must be a run id or a defined stream"),
        (
            '{% stream_viewer "run_1" render="html" %}',
            {},
            "render= must be 'text' or 'markdown', got 'html'",
        ),
        (
            '{% stream_viewer "run_1" render=mode %}',
            {"mode": None},
            "render= must be 'text' or 'markdown', got None",
        ),
    ],
)
def test_viewer_bad_arguments_say_what_is_wrong(
    source: str, context: dict[str, Any], message: str
) -> None:
    with pytest.raises(TemplateSyntaxError, match=re.escape(message)):
        render(source, **context)


# -- security: what a page may carry ------------------------------------------------------------


@pytest.mark.django_db
def test_ticket_is_bound_to_the_request_user(django_user_model: Any) -> None:
    user = django_user_model.objects.create_user("ada")
    request = SimpleNamespace(user=user)
    _, ticket = split_ticket(render('{% stream_viewer "run_abc123" %}', request=request))
    assert load_ticket(ticket).user_pk == str(user.pk)


def test_page_never_carries_the_secret_key_or_the_wide_trigger_token() -> None:
    # What trigger() returns: read AND write:inputStreams on the run.
    wide = sign(["read:runs:run_abc123", "write:inputStreams:run_abc123"])
    html = render(
        '{% trigger_django_script %}{% stream_viewer "run_abc123" "ai-output" access_token=t %}',
        t=wide,
    )
    _, ticket = split_ticket(html)
    for blob in (html.encode(), ticket_payload(ticket)):
        assert SECRET.encode() not in blob
        assert wide.encode() not in blob
        assert b"write:inputStreams" not in blob
    assert load_ticket(ticket).access_token is None


@pytest.mark.parametrize(
    "token",
    [
        sign(["read:runs:run_other"]),  # another run
        sign(["read:runs"]),  # every run
        sign(["read:runs:run_abc123"], key="tr_dev_some_other_environment_key_0123456789"),
        sign(["read:runs:run_abc123"], exp=int(time.time()) - 10),  # expired
        "not-a-jwt",
    ],
    ids=["other-run", "type-wide", "foreign-key", "expired", "garbage"],
)
def test_tokens_that_are_not_exactly_this_runs_read_scope_are_dropped(token: str) -> None:
    html = render('{% stream_viewer "run_abc123" access_token=t %}', t=token)
    _, ticket = split_ticket(html)
    assert token.encode() not in html.encode() + ticket_payload(ticket)
    assert load_ticket(ticket).access_token is None


def test_an_exact_read_token_is_carried_inside_the_signed_ticket() -> None:
    token = sign(["read:runs:run_abc123"])
    _, ticket = split_ticket(render('{% stream_viewer "run_abc123" access_token=t %}', t=token))
    assert load_ticket(ticket).access_token == token


# -- tickets ------------------------------------------------------------------------------------


def test_expired_ticket_is_refused() -> None:
    ticket = make_ticket(user_pk=1, run_id="run_1", key="default")
    with pytest.raises(TicketError) as info:
        load_ticket(ticket, max_age=-1)
    assert info.value.reason == "expired"


def test_tampered_ticket_is_refused() -> None:
    ticket = make_ticket(user_pk=1, run_id="run_1", key="default")
    forged = ticket[:-2] + ("AA" if not ticket.endswith("AA") else "BB")
    with pytest.raises(TicketError) as info:
        load_ticket(forged)
    assert info.value.reason == "invalid"
