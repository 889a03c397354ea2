"""``trigger_django.errors``: one exception base, one mapping naming the party at fault."""

from __future__ import annotations

import asyncio
import logging
import sys

import pytest
from django.core.exceptions import (
    ImproperlyConfigured,
    PermissionDenied,
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    ValidationError,
)
from django.http import Http404
from django.views.debug import ExceptionReporter

from trigger_django.client import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InvalidTokenError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RunCompletedError,
    TriggerError,
    UnprocessableEntityError,
    UpstreamUnavailableError,
)
from trigger_django.errors import (
    ConfigurationError,
    ErrorDescription,
    RequestError,
    TriggerDjangoError,
    describe,
    log_failure,
)
from trigger_django.forms import InvalidIdempotencyKey, UnknownInputForm
from trigger_django.tickets import InvalidIdentifier, TicketError
from trigger_django.upstream import UpstreamConfigurationError

#: What the failing function holds; its source spells it in pieces, so only locals show it whole.
SECRET = "minted-" + "value-42"
CONFIG_WORDS = "problem in this site's configuration"
UPSTREAM_WORDS = "problem at Trigger.dev"
BUG_WORDS = "A bug in this server"


@pytest.mark.parametrize(
    ("exc", "status", "party", "words"),
    [
        # Ours: the request.
        (RequestError("Say yes or no."), 400, "request", "Say yes or no."),
        (RequestError("Too big.", status=413), 413, "request", "Too big."),
        (InvalidIdentifier("Invalid run id 'x'"), 400, "request", "Invalid run id"),
        (TicketError("expired", "The ticket has expired."), 401, "request", "has expired"),
        (InvalidIdempotencyKey("This form has expired."), 400, "request", "has expired"),
        (UnknownInputForm("Not one of ours."), 400, "request", "Not one of ours."),
        # Ours: the configuration.
        (ConfigurationError("Set INPUT_FORMS."), 503, "configuration", CONFIG_WORDS),
        (UpstreamConfigurationError("No secret key."), 503, "configuration", CONFIG_WORDS),
        # The client's: a credential Trigger.dev does not take is our configuration.
        (AuthenticationError(401, "Invalid API key"), 503, "configuration", "Invalid API key"),
        (PermissionDeniedError(403, ""), 503, "configuration", "secret key"),
        # The client's: what the request asked for.
        (RunCompletedError(400, "completed run"), 400, "request", "already finished"),
        (NotFoundError(404, "no run"), 404, "request", "no such run or stream (no run)"),
        (PayloadTooLargeError(413, ""), 413, "request", "too large"),
        (BadRequestError(400, "bad data"), 400, "request", "Trigger.dev refused the request"),
        (UnprocessableEntityError(422, "bad"), 422, "request", "refused the request: bad"),
        (InvalidTokenError("Public access token has expired"), 400, "request", "expired"),
        # The client's: Trigger.dev itself.
        (ConflictError(409, "busy"), 502, "upstream", "Trigger.dev answered 409 (busy)"),
        (APIStatusError(418, ""), 502, "upstream", UPSTREAM_WORDS),
        (UpstreamUnavailableError("down", status=None), 503, "upstream", "could not be reached"),
        (UpstreamUnavailableError("busy", status=429), 503, "upstream", "429"),
        (TriggerError("odd answer"), 502, "upstream", "could not be used"),
        # Django's.
        (ImproperlyConfigured("x"), 503, "configuration", CONFIG_WORDS),
        (PermissionDenied(), 403, "request", "You may not"),
        (Http404(), 404, "request", "Not found"),
        (RequestDataTooBig(), 413, "request", "too large"),
        (TooManyFieldsSent(), 400, "request", "could not be read"),
        (SuspiciousOperation(), 400, "request", "could not be read"),
        (ValidationError("x"), 400, "request", "not valid"),
        # Not an error of anyone's request: the server.
        (asyncio.CancelledError(), 503, "server", "try again"),
        (KeyboardInterrupt(), 503, "server", "try again"),
        (ZeroDivisionError("1/0"), 500, "server", BUG_WORDS),
        (TriggerDjangoError("internal"), 500, "server", BUG_WORDS),
    ],
)
def test_each_error_maps_to_one_status_message_and_party(exc, status, party, words):
    description = describe(exc)
    assert isinstance(description, ErrorDescription)
    assert (description.status, description.party) == (status, party)
    assert words in description.message
    # Only configuration, upstream and bugs get the sentence naming the party; never the
    # wording that blamed Trigger.dev for our own mistakes.
    assert (CONFIG_WORDS in description.message) is (party == "configuration")
    assert (UPSTREAM_WORDS in description.message) is (party == "upstream")
    if party == "configuration" or party == "server":
        assert "Trigger.dev answered" not in description.message


def test_upstream_configuration_error_is_one_of_ours_and_one_of_the_clients():
    exc = UpstreamConfigurationError("No Trigger.dev secret key.")
    assert isinstance(exc, ConfigurationError)
    assert isinstance(exc, TriggerDjangoError)
    assert isinstance(exc, TriggerError)
    assert isinstance(exc, ImproperlyConfigured)
    assert describe(exc).message.startswith("No Trigger.dev secret key.")


def test_id_errors_are_still_value_errors():
    assert issubclass(InvalidIdentifier, ValueError)


def test_a_bugs_own_text_is_never_shown():
    secret = "eyJhbGciOiJIUzI1NiJ9.secret"
    for exc in (RuntimeError(secret), TriggerDjangoError(secret), ImproperlyConfigured(secret)):
        assert secret not in describe(exc).message


def test_fields_travel_with_request_errors():
    exc = RequestError("The input is not valid.", fields={"amount": ["Too small."]})
    assert exc.fields == {"amount": ["Too small."]}
    assert describe(exc).message == "The input is not valid."


def _fails_holding_a_secret() -> None:
    minted = "".join(("minted-", "value-42"))
    assert minted
    raise RuntimeError("boom")


def test_log_failure_clears_the_locals_that_debug_pages_and_trackers_show(caplog, settings):
    settings.DEBUG = True  # the technical page then hides nothing by itself
    try:
        try:
            _fails_holding_a_secret()
        except RuntimeError as inner:
            raise ValueError("while handling") from inner
    except ValueError as exc:
        caught = exc
    before = ExceptionReporter(None, type(caught), caught, caught.__traceback__)
    assert SECRET in before.get_traceback_html()  # the test can fail

    with caplog.at_level(logging.ERROR, logger="tests"):
        log_failure(logging.getLogger("tests"), caught, describe(caught))
    [record] = caplog.records
    assert record.exc_info is not None
    assert record.exc_info[1] is caught
    html = ExceptionReporter(None, *record.exc_info).get_traceback_html()
    assert "_fails_holding_a_secret" in html  # the traceback is kept...
    assert SECRET not in html  # ...its locals are not, in the chain too


@pytest.mark.parametrize(
    ("exc", "level", "with_traceback"),
    [
        (ZeroDivisionError(), logging.ERROR, True),
        (ConfigurationError("Set it."), logging.ERROR, False),
        (UpstreamUnavailableError("down"), logging.WARNING, False),
        (RequestError("No."), logging.INFO, False),
    ],
)
def test_log_failure_logs_as_the_party_deserves(caplog, exc, level, with_traceback):
    try:
        raise exc
    except BaseException as raised:
        with caplog.at_level(logging.INFO, logger="tests"):
            log_failure(logging.getLogger("tests"), raised, describe(raised))
    [record] = caplog.records
    assert record.levelno == level
    assert (record.exc_info is not None) is with_traceback


def test_describe_accepts_the_exception_being_handled():
    try:
        raise NotFoundError(404, "")
    except NotFoundError:
        exc = sys.exc_info()[1]
    assert exc is not None
    assert describe(exc) == ErrorDescription(
        404, "Trigger.dev has no such run or stream.", "request"
    )
