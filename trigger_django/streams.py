"""Defined streams: typed handles for a task's output and input streams, as the SDK's
``streams.define()`` / ``streams.input()``.

Define them once in a project module and use them everywhere::

    # myapp/streams.py
    from trigger_django import streams

    ai_output = streams.define("ai-output", type=str)
    approval = streams.input("approval", form=ApprovalForm)

    # in a template: {% stream_viewer ai_output run.id %} {% approval_form run.id approval %}
    # in Python:     ai_output.read(run_id) / await ai_output.aread(run_id)
    #                approval.send(run_id, {"approved": True, "reviewer": "ada"})

``type`` is ``str``, ``int``, ``float``, ``bool``, ``dict``, ``list``, ``list[...]``,
``dict[str, ...]``, a union, a ``Literal``, a ``TypedDict`` or a dataclass. The server checks every
chunk against it: a chunk that does not fit is still delivered, raw (never dropped), and logged
once per read. ``read``/``aread`` turn dicts into the dataclass when they fit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import types
import typing
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, Union, cast

from asgiref.sync import async_to_sync
from django import forms
from django.core.exceptions import ImproperlyConfigured
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpRequest

__all__ = [
    "ChunkCheck",
    "InputStream",
    "InvalidInput",
    "OutputStream",
    "define",
    "input",
    "input_stream",
    "output_stream",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_OUTPUT_STREAMS: dict[str, OutputStream[Any]] = {}
_INPUT_STREAMS: dict[str, InputStream] = {}


# --- Type checks ---------------------------------------------------------------------------------


def _validate_type(tp: Any, where: str) -> None:
    """Raise ``TypeError`` at definition time for a type the checks cannot handle."""
    if tp is None or tp is Any or tp in (str, int, float, bool, dict, list, type(None)):
        return
    origin = typing.get_origin(tp)
    if origin in (list, dict, Union, types.UnionType, typing.Literal):
        for arg in typing.get_args(tp):
            if origin is not typing.Literal and not (origin is dict and arg is str):
                _validate_type(arg, where)
        return
    if typing.is_typeddict(tp) or (isinstance(tp, type) and dataclasses.is_dataclass(tp)):
        for hint in typing.get_type_hints(tp).values():
            _validate_type(hint, where)
        return
    raise TypeError(
        f"{where}: cannot check chunks against {tp!r}. Use str, int, float, bool, dict, list, "
        "list[...], dict[str, ...], a union, a Literal, a TypedDict or a dataclass."
    )


def _mismatch(value: Any, tp: Any, path: str = "chunk") -> str | None:
    """Why ``value`` (parsed JSON) does not fit ``tp``, or ``None`` when it does."""
    if tp is None or tp is Any:
        return None
    if tp is type(None):
        return None if value is None else f"{path} is {_kind(value)}, not null"
    if tp is bool:
        return None if isinstance(value, bool) else f"{path} is {_kind(value)}, not a boolean"
    if tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else f"{path} is {_kind(value)}, not an integer"
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else f"{path} is {_kind(value)}, not a number"
    if tp is str:
        return None if isinstance(value, str) else f"{path} is {_kind(value)}, not a string"
    if tp is dict:
        return None if isinstance(value, dict) else f"{path} is {_kind(value)}, not an object"
    if tp is list:
        return None if isinstance(value, list) else f"{path} is {_kind(value)}, not an array"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return None if value in args else f"{path} is {value!r}, not one of {list(args)!r}"
    if origin in (Union, types.UnionType):
        reasons = [_mismatch(value, arg, path) for arg in args]
        return None if None in reasons else " and ".join(r for r in reasons if r)
    if origin is list:
        if not isinstance(value, list):
            return f"{path} is {_kind(value)}, not an array"
        for index, item in enumerate(value):
            if reason := _mismatch(item, args[0] if args else Any, f"{path}[{index}]"):
                return reason
        return None
    if origin is dict:
        if not isinstance(value, dict):
            return f"{path} is {_kind(value)}, not an object"
        for key, item in value.items():
            if reason := _mismatch(item, args[1] if len(args) > 1 else Any, f"{path}[{key!r}]"):
                return reason
        return None
    if typing.is_typeddict(tp) or dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            return f"{path} is {_kind(value)}, not an object like {tp.__name__}"
        hints = typing.get_type_hints(tp)
        unknown = sorted(set(value) - set(hints))
        if unknown:
            return f"{path} has keys {tp.__name__} does not declare: {', '.join(unknown)}"
        missing = sorted(set(_required_keys(tp)) - set(value))
        if missing:
            return f"{path} lacks {tp.__name__}'s keys: {', '.join(missing)}"
        for key, item in value.items():
            if reason := _mismatch(item, hints[key], f"{path}[{key!r}]"):
                return reason
        return None
    return f"{path}: cannot check against {tp!r}"


def _required_keys(tp: Any) -> list[str]:
    if typing.is_typeddict(tp):
        return list(tp.__required_keys__)
    return [
        f.name
        for f in dataclasses.fields(tp)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]


def _convert(value: Any, tp: Any) -> Any:
    """``value`` (known to fit ``tp``) with dicts turned into the dataclasses ``tp`` names."""
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        return tp(**{key: _convert(item, hints[key]) for key, item in value.items()})
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is list and args:
        return [_convert(item, args[0]) for item in value]
    if origin is dict and len(args) > 1:
        return {key: _convert(item, args[1]) for key, item in value.items()}
    if origin in (Union, types.UnionType):
        for arg in args:
            if _mismatch(value, arg) is None:
                return _convert(value, arg)
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


# --- Output streams ------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputStream(Generic[T]):
    """An output stream a task writes to (``streams.define({id})`` in the SDK).

    ``type`` (default: anything) is what each chunk should be; see the module docstring.
    """

    id: str
    type: Any = None

    def __post_init__(self) -> None:
        from trigger_django.tickets import validate_stream_key

        validate_stream_key(self.id)
        _validate_type(self.type, f"Output stream {self.id!r}")

    def check(self, chunk: Any) -> str | None:
        """Why ``chunk`` does not fit the declared type, or ``None`` when it does."""
        return _mismatch(chunk, self.type)

    def parse(self, chunk: Any) -> T:
        """``chunk`` as the declared type (dataclasses built) when it fits, else ``chunk``."""
        if self.type is None or self.check(chunk) is not None:
            return cast(T, chunk)
        return cast(T, _convert(chunk, self.type))

    async def aread(
        self,
        run_id: str,
        *,
        start_index: int | None = None,
        timeout_seconds: float | None = None,
        access_token: str | None = None,
    ) -> AsyncIterator[T]:
        """Yield the run's chunks as they arrive, until the stream has been idle for
        ``timeout_seconds`` (default ``TRIGGER_DJANGO["TIMEOUT_SECONDS"]``), resuming after
        drops. Authenticates with the secret key unless ``access_token`` is given."""
        from trigger_django.conf import get_config
        from trigger_django.tasks import require_secret_key
        from trigger_django.upstream import get_client

        if access_token is None:
            require_secret_key(f"read stream {self.id!r} of run {run_id}")
        check = ChunkCheck(self, run_id)
        timeout = timeout_seconds or get_config().timeout_seconds
        client = get_client(access_token=access_token, run_id=run_id)
        async with client.read_stream(
            run_id, self.id, start_index=start_index, timeout_seconds=timeout
        ) as parts:
            async for part in parts:
                yield check.parse(part.chunk)

    def read(
        self,
        run_id: str,
        *,
        start_index: int | None = None,
        timeout_seconds: float | None = None,
        limit: int | None = None,
        access_token: str | None = None,
    ) -> list[T]:
        """From sync code: the run's chunks, collected until the stream has been idle for
        ``timeout_seconds`` or ``limit`` chunks have arrived. For live use, :meth:`aread`."""
        from trigger_django.client import TriggerClient
        from trigger_django.conf import get_config
        from trigger_django.tasks import own_client, refuse_event_loop, require_secret_key

        refuse_event_loop("read", "aread")
        config = get_config()
        if access_token is None:
            config = require_secret_key(f"read stream {self.id!r} of run {run_id}")
        check = ChunkCheck(self, run_id)
        timeout = timeout_seconds or config.timeout_seconds

        async def collect() -> list[T]:
            chunks: list[T] = []
            client = (
                TriggerClient(config.api_url, access_token=access_token)
                if access_token is not None
                else own_client(config)
            )
            async with (
                client,
                client.read_stream(
                    run_id, self.id, start_index=start_index, timeout_seconds=timeout
                ) as parts,
            ):
                async for part in parts:
                    chunks.append(check.parse(part.chunk))
                    if limit is not None and len(chunks) >= limit:
                        break
            return chunks

        return async_to_sync(collect)()


class ChunkCheck:
    """Checks the chunks of one read against a stream's declared type and logs the first one
    that does not fit (once per read). Chunks are never changed or dropped here."""

    def __init__(self, stream: OutputStream[Any] | None, run_id: str) -> None:
        self.stream = stream if stream is not None and stream.type is not None else None
        self.run_id = run_id
        self.warned = False

    @classmethod
    def for_key(cls, key: str, run_id: str) -> ChunkCheck:
        """The check for the stream defined under ``key`` (none if it is not defined)."""
        return cls(_OUTPUT_STREAMS.get(key), run_id)

    def __call__(self, chunk: Any) -> bool:
        """True when ``chunk`` fits (or nothing is declared)."""
        if self.stream is None:
            return True
        reason = self.stream.check(chunk)
        if reason is not None and not self.warned:
            self.warned = True
            logger.warning(
                "Stream %r of run %s: a chunk does not fit the declared type %r (%s); it is "
                "delivered raw. Later misfits of this read are not logged. Chunk: %.200s",
                self.stream.id,
                self.run_id,
                self.stream.type,
                reason,
                _preview(chunk),
            )
        return reason is None

    def parse(self, chunk: Any) -> Any:
        if self.stream is None or not self(chunk):
            return chunk
        return _convert(chunk, self.stream.type)


def _preview(chunk: Any) -> str:
    try:
        return json.dumps(chunk)
    except (TypeError, ValueError):
        return repr(chunk)


def define(id: str, *, type: Any = None) -> OutputStream[Any]:
    """Define (and register) the output stream ``id``; returns its handle.

    Defining the same id again with the same type returns the first handle; with another type
    it is an :class:`ImproperlyConfigured` error, since the server checks chunks by id.
    """
    stream: OutputStream[Any] = OutputStream(id, type)
    existing = _OUTPUT_STREAMS.get(id)
    if existing is not None:
        if existing.type != type:
            raise ImproperlyConfigured(
                f"Output stream {id!r} is already defined with type {existing.type!r}; "
                f"it cannot also be {type!r}."
            )
        return existing
    _OUTPUT_STREAMS[id] = stream
    return stream


def output_stream(id: str) -> OutputStream[Any] | None:
    """The output stream defined under ``id``, if any."""
    return _OUTPUT_STREAMS.get(id)


# --- Input streams -------------------------------------------------------------------------------


class InvalidInput(ValueError):
    """Data sent with :meth:`InputStream.send` does not pass the stream's form."""

    def __init__(self, stream_id: str, errors: Mapping[str, list[str]]) -> None:
        detail = "; ".join(f"{name}: {' '.join(messages)}" for name, messages in errors.items())
        super().__init__(f"Input for stream {stream_id!r} is not valid: {detail}")
        self.errors = dict(errors)


@dataclass(frozen=True)
class InputStream:
    """An input stream a task reads (``streams.input({id})``); ``form`` validates what is sent,
    by ``{% approval_form %}`` and by :meth:`send`."""

    id: str
    form: type[forms.Form] | None = field(default=None)

    def __post_init__(self) -> None:
        from trigger_django.tickets import validate_stream_key

        validate_stream_key(self.id)
        if self.form is not None and not (
            isinstance(self.form, type) and issubclass(self.form, forms.BaseForm)
        ):
            raise TypeError(
                f"Input stream {self.id!r}: form= must be a django.forms.Form subclass, "
                f"not {self.form!r}."
            )
        # Registered as soon as it is defined, so that every process that imported the stream
        # accepts posts of forms another process rendered (the key names the form; the view
        # only takes registered ones). A form that cannot be registered is refused by the tag.
        if self.form is not None:
            from trigger_django.forms import register_input_form

            with contextlib.suppress(ImproperlyConfigured):
                register_input_form(self.form)

    def payload(self, data: Mapping[str, Any], *, request: HttpRequest | None = None) -> Any:
        """What :meth:`send` sends for ``data``: validated by the form (if any), JSON-safe.

        With ``request``, the form's server fields are filled in as the send view does
        (``reviewer`` from ``request.user``); without, keys the form does not declare are kept
        as given, since the caller is trusted server code.
        """
        if self.form is None:
            return data
        from trigger_django.forms import build_payload

        if request is not None:
            form, payload = build_payload(self.form, data, request)
        else:
            form = self.form(data=data)
            payload = None
            if form.is_valid():
                extra = {key: value for key, value in data.items() if key not in form.fields}
                payload = json.loads(
                    json.dumps({**extra, **form.cleaned_data}, cls=DjangoJSONEncoder)
                )
        if payload is None:
            errors = {name: [str(e) for e in errs] for name, errs in form.errors.items()}
            raise InvalidInput(self.id, errors)
        return payload

    async def asend(
        self, run_id: str, data: Mapping[str, Any], *, request: HttpRequest | None = None
    ) -> Any:
        """Send ``data`` to this input stream of ``run_id`` (with the secret key: check the
        user's right to answer the run first). Returns Trigger.dev's answer."""
        from trigger_django.tasks import require_secret_key
        from trigger_django.upstream import get_client

        require_secret_key(f"send to input stream {self.id!r} of run {run_id}")
        payload = await _in_thread(self.payload, data, request)
        return await get_client().send_input(run_id, self.id, payload)

    def send(
        self, run_id: str, data: Mapping[str, Any], *, request: HttpRequest | None = None
    ) -> Any:
        """:meth:`asend` for sync code."""
        from trigger_django.tasks import own_client, refuse_event_loop, require_secret_key

        refuse_event_loop("send", "asend")
        config = require_secret_key(f"send to input stream {self.id!r} of run {run_id}")
        payload = self.payload(data, request=request)

        async def call() -> Any:
            async with own_client(config) as client:
                return await client.send_input(run_id, self.id, payload)

        return async_to_sync(call)()


async def _in_thread(
    function: Callable[..., Any], data: Mapping[str, Any], request: HttpRequest | None
) -> Any:
    from asgiref.sync import sync_to_async

    # Forms may touch the database (ModelChoiceField): not on the event loop.
    return await sync_to_async(lambda: function(data, request=request))()


def input(id: str, *, form: type[forms.Form] | None = None) -> InputStream:
    """Define (and register) the input stream ``id`` validated by ``form``."""
    stream = InputStream(id, form)
    existing = _INPUT_STREAMS.get(id)
    if existing is not None:
        if existing.form is not form:
            raise ImproperlyConfigured(
                f"Input stream {id!r} is already defined with form {existing.form!r}; it "
                f"cannot also use {form!r}."
            )
        return existing
    _INPUT_STREAMS[id] = stream
    return stream


def input_stream(id: str) -> InputStream | None:
    """The input stream defined under ``id``, if any (the send view's form registry may use
    it)."""
    return _INPUT_STREAMS.get(id)
