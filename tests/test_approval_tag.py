"""``{% approval_form %}``: exact HTML, valid HTML, and the signed per-render key."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from django import forms
from django.core import signing
from django.template import Context, Template, TemplateSyntaxError
from django.test import RequestFactory

from trigger_django.forms import read_idempotency_key, registered_input_form
from trigger_django.streams import InputStream
from trigger_django.tickets import load_ticket

KEY_RE = re.compile(r'name="idempotency_key" value="([^"]+)"')


class RefundForm(forms.Form):
    amount = forms.IntegerField(min_value=1)
    note = forms.CharField(required=False, max_length=200, help_text="Why?")
    reviewer = forms.CharField()

    server_fields = {"reviewer": lambda request: request.user.get_username()}


def render(source: str, context: dict[str, object], request=None) -> str:
    template = Template("{% load trigger_django %}" + source)
    if request is not None:
        context = {**context, "request": request}
    return template.render(Context(context))


RUN_TICKET_RE = re.compile(r'data-trigger-live-run data-ticket="([^"]+)"')


def without_key(html: str) -> tuple[str, str]:
    match = KEY_RE.search(html)
    assert match, html
    ticket = RUN_TICKET_RE.search(html)
    assert ticket, html
    # The run-wide ticket of the form's run subscription (the form closes with its run).
    assert load_ticket(ticket.group(1)).key == "*"
    html = RUN_TICKET_RE.sub('data-trigger-live-run data-ticket="TICKET"', html)
    return KEY_RE.sub('name="idempotency_key" value="KEY"', html), match.group(1)


class StrictHTMLChecker(HTMLParser):
    """Fails on unbalanced or misnested tags (void elements excepted)."""

    VOID = {"input", "br", "img", "meta", "link", "hr"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        names = [name for name, _ in attrs]
        assert len(names) == len(set(names)), f"duplicate attribute in <{tag}>: {names}"
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack, f"</{tag}> closes nothing"
        assert self.stack[-1] == tag, f"</{tag}> closes {self.stack}"
        self.stack.pop()

    def check(self, html: str) -> None:
        self.feed(html)
        self.close()
        assert self.stack == [], f"unclosed tags: {self.stack}"


DEFAULT_FORM = (
    '<form class="trigger-input-form" method="post" action="/trigger/runs/run_abc/input/approval/"'
    ' data-trigger-input="approval" data-trigger-run="run_abc">'
    '<input type="hidden" name="csrfmiddlewaretoken" value="TOKEN">\n'
    '<input type="hidden" name="next" value="{next}">\n'
    '<input type="hidden" name="idempotency_key" value="KEY">\n'
    '<div class="trigger-input-actions">'
    '<button type="submit" name="approved" value="true">Approve</button>'
    '<button type="submit" name="approved" value="false">Reject</button></div>\n'
    '<p class="trigger-input-status" role="status" data-trigger-status hidden></p>\n'
    '<span data-trigger-live-run data-ticket="TICKET" data-run-id="run_abc" hidden></span>\n'
    '<p class="trigger-input-error" role="alert" data-trigger-error hidden></p>\n'
    "</form>"
)


def test_default_form_exact_html():
    html = render(
        '{% approval_form run_id "approval" %}', {"run_id": "run_abc", "csrf_token": "TOKEN"}
    )
    html, key = without_key(html)
    assert html == DEFAULT_FORM.format(next="")
    parsed = read_idempotency_key(key, "run_abc", "approval")
    assert parsed.form_name is None  # the view finds the default form from the stream id
    StrictHTMLChecker().check(html)


def test_next_is_the_current_path_and_escaped():
    request = RequestFactory().get("/runs/run_abc/", {"tab": "a&b"})
    html = render(
        '{% approval_form run_id "approval" %}',
        {"run_id": "run_abc", "csrf_token": "TOKEN"},
        request=request,
    )
    html, _ = without_key(html)
    assert html == DEFAULT_FORM.format(next="/runs/run_abc/?tab=a%26b")
    StrictHTMLChecker().check(html)


def test_next_from_another_site_is_replaced_by_the_current_path():
    request = RequestFactory().get("/runs/run_abc/")
    html = render(
        '{% approval_form run_id "approval" next="https://evil.example/" %}',
        {"run_id": "run_abc", "csrf_token": "TOKEN"},
        request=request,
    )
    assert 'name="next" value="/runs/run_abc/"' in html
    assert "evil" not in html


def test_each_render_gets_a_new_key_bound_to_run_and_stream():
    context = {"run_id": "run_abc", "csrf_token": "TOKEN"}
    _, first = without_key(render('{% approval_form run_id "approval" %}', context))
    _, second = without_key(render('{% approval_form run_id "approval" %}', context))
    assert first != second
    assert read_idempotency_key(first, "run_abc", "approval").nonce != (
        read_idempotency_key(second, "run_abc", "approval").nonce
    )
    with pytest.raises(Exception, match="another run or stream"):
        read_idempotency_key(first, "run_other", "approval")
    with pytest.raises(Exception, match="not valid"):
        read_idempotency_key(first[:-2] + "xx", "run_abc", "approval")
    # The key is signed, not secret: it holds no token and no user data.
    payload = signing.loads(first, salt="trigger_django.input.idempotency")
    assert set(payload) == {"n", "r", "s", "f"}


def test_input_stream_with_a_form_class_renders_its_fields_but_not_server_fields():
    stream = InputStream("refund", form=RefundForm)
    html = render(
        "{% approval_form run_id stream %}",
        {"run_id": "run_abc", "stream": stream, "csrf_token": "TOKEN"},
    )
    html, key = without_key(html)
    assert html == (
        '<form class="trigger-input-form" method="post"'
        ' action="/trigger/runs/run_abc/input/refund/"'
        ' data-trigger-input="refund" data-trigger-run="run_abc">'
        '<input type="hidden" name="csrfmiddlewaretoken" value="TOKEN">\n'
        '<input type="hidden" name="next" value="">\n'
        '<input type="hidden" name="idempotency_key" value="KEY">\n'
        '<div class="trigger-input-field"><label for="id_refund_amount">Amount:</label>'
        '<input type="number" name="amount" min="1" required id="id_refund_amount"></div>\n'
        '<div class="trigger-input-field"><label for="id_refund_note">Note:</label>'
        '<input type="text" name="note" maxlength="200"'
        ' aria-describedby="id_refund_note_helptext" id="id_refund_note">'
        '<small class="helptext" id="id_refund_note_helptext">Why?</small></div>\n'
        '<div class="trigger-input-actions"><button type="submit">Send</button></div>\n'
        '<p class="trigger-input-status" role="status" data-trigger-status hidden></p>\n'
        '<span data-trigger-live-run data-ticket="TICKET" data-run-id="run_abc" hidden></span>\n'
        '<p class="trigger-input-error" role="alert" data-trigger-error hidden></p>\n'
        "</form>"
    )
    assert 'name="reviewer"' not in html
    assert read_idempotency_key(key, "run_abc", "refund").form_name == (
        "tests.test_approval_tag.RefundForm"
    )
    StrictHTMLChecker().check(html)


@pytest.mark.parametrize(
    ("run_id", "stream", "message"),
    [
        ("", '"approval"', "Invalid run id ''"),
        ("run_1/../x", '"approval"', "Invalid run id"),
        ("run_1\n", '"approval"', "Invalid run id 'run_1\\n'"),
        ("run_1", '"bad key!"', "approval_form:"),
        ("run_1", "42", "needs a stream id or an input stream object"),
    ],
)
def test_bad_arguments_raise_a_clear_template_error(run_id, stream, message):
    with pytest.raises(TemplateSyntaxError, match=re.escape(message)):
        render(f"{{% approval_form run_id {stream} %}}", {"run_id": run_id})


def test_a_form_class_that_cannot_be_imported_back_is_refused():
    class LocalForm(forms.Form):
        text = forms.CharField()

    with pytest.raises(Exception, match="must be defined at module level"):
        render(
            "{% approval_form run_id stream %}",
            {"run_id": "run_1", "stream": InputStream("local", form=LocalForm)},
        )


def test_csrf_token_comes_from_the_request_when_the_context_has_none():
    from django.middleware.csrf import _unmask_cipher_token, get_token

    request = RequestFactory().get("/runs/run_abc/")
    html = render('{% approval_form run_id "approval" %}', {"run_id": "run_abc"}, request=request)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)
    assert len(token) == 64
    assert _unmask_cipher_token(token) == _unmask_cipher_token(get_token(request))


class StreamForm(forms.Form):
    text = forms.CharField()


class RenderedForm(forms.Form):
    text = forms.CharField()


def test_an_input_streams_form_is_registered_when_the_stream_is_defined():
    # So a process that never rendered the form still accepts posts another process rendered.
    with pytest.raises(Exception, match="not one of this server's input forms"):
        registered_input_form(f"{__name__}.StreamForm")
    InputStream("notes", form=StreamForm)
    assert registered_input_form(f"{__name__}.StreamForm") is StreamForm


def test_the_tag_registers_the_form_it_renders_and_names_it_in_the_key():
    class Holder:  # not an InputStream: only the render registers its form
        id = "rendered"
        form = RenderedForm

    with pytest.raises(Exception, match="not one of this server's input forms"):
        registered_input_form(f"{__name__}.RenderedForm")
    html = render(
        "{% approval_form run_id stream %}",
        {"run_id": "run_abc", "stream": Holder(), "csrf_token": "TOKEN"},
    )
    _, key = without_key(html)
    name = read_idempotency_key(key, "run_abc", "rendered").form_name
    assert name == f"{__name__}.RenderedForm"
    assert registered_input_form(name) is RenderedForm
