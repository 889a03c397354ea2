"""Run metadata updates: ``PUT /api/v1/runs/{run}/metadata`` as the SDK's ``metadata`` calls use it.

The body is the SDK's ``FlushedRunMetadata``: ``{"operations": [...]}`` (what the in-task
metadata manager flushes) or ``{"metadata": {...}}`` (a direct replacement). Operations are
applied as the SDK's ``applyMetadataOperations`` applies them: ``set``, ``delete``,
``append``, ``remove``, ``increment`` and ``update``; keys starting with ``$.`` are JSON paths
(``$.a.b``, ``$.list[0]``).
"""

from __future__ import annotations

import copy
import re
from typing import Any

OPERATION_TYPES = ("set", "delete", "append", "remove", "increment", "update")
_UNSAFE_KEYS = frozenset({"__proto__", "constructor", "prototype"})
_PATH_TOKEN = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]")


class MetadataError(ValueError):
    """A metadata body that does not fit the SDK's schema; the message says what was wrong."""


def validate_body(body: Any) -> tuple[list[dict[str, Any]] | None, dict[str, Any] | None]:
    """``(operations, metadata)`` of a ``FlushedRunMetadata`` body, checked."""
    if not isinstance(body, dict):
        raise MetadataError('expected an object like {"operations": [...]} or {"metadata": {...}}')
    operations = body.get("operations")
    metadata = body.get("metadata")
    if operations is not None:
        if not isinstance(operations, list):
            raise MetadataError("operations must be an array")
        for index, operation in enumerate(operations):
            _validate_operation(operation, f"operations[{index}]")
    if metadata is not None and not isinstance(metadata, dict):
        raise MetadataError("metadata must be an object")
    for name in ("parentOperations", "rootOperations"):
        extra = body.get(name)
        if extra is not None and not isinstance(extra, list):
            raise MetadataError(f"{name} must be an array")
    return operations, metadata


def _validate_operation(operation: Any, where: str) -> None:
    if not isinstance(operation, dict) or operation.get("type") not in OPERATION_TYPES:
        raise MetadataError(f"{where} must be an object whose type is one of {OPERATION_TYPES}")
    kind = operation["type"]
    if kind == "update":
        if not isinstance(operation.get("value"), dict):
            raise MetadataError(f"{where}: an update's value must be an object")
        return
    if not isinstance(operation.get("key"), str):
        raise MetadataError(f"{where}: a {kind} operation needs a string key")
    if kind == "increment" and (
        isinstance(operation.get("value"), bool)
        or not isinstance(operation.get("value"), int | float)
    ):
        raise MetadataError(f"{where}: an increment's value must be a number")
    if kind in ("set", "append", "remove") and "value" not in operation:
        raise MetadataError(f"{where}: a {kind} operation needs a value")


def apply_operations(
    current: dict[str, Any], operations: list[dict[str, Any]]
) -> tuple[dict[str, Any], int]:
    """The metadata after ``operations``, and how many of them were applied."""
    metadata = copy.deepcopy(current)
    applied = 0
    for operation in operations:
        kind = operation["type"]
        if kind == "update":
            metadata = copy.deepcopy(operation["value"])
            applied += 1
            continue
        key: str = operation["key"]
        path = _path(key)
        if path is None or any(part in _UNSAFE_KEYS for part in path if isinstance(part, str)):
            continue
        if kind == "set":
            _set(metadata, path, operation["value"])
        elif kind == "delete":
            parent = _get(metadata, path[:-1])
            if isinstance(parent, dict):
                parent.pop(path[-1], None)
        elif kind == "append":
            existing = _get(metadata, path)
            if existing is None:
                _set(metadata, path, [operation["value"]])
            elif isinstance(existing, list):
                _set(metadata, path, [*existing, operation["value"]])
            else:
                _set(metadata, path, [existing, operation["value"]])
        elif kind == "remove":
            existing = _get(metadata, path)
            if not isinstance(existing, list):
                continue
            _set(metadata, path, [item for item in existing if item != operation["value"]])
        elif kind == "increment":
            existing = _get(metadata, path)
            number = (
                existing
                if isinstance(existing, int | float) and not isinstance(existing, bool)
                else 0
            )
            _set(metadata, path, number + operation["value"])
        applied += 1
    return metadata, applied


def _path(key: str) -> list[str | int] | None:
    """``"progress"`` → ``["progress"]``; ``"$.a.b[0]"`` → ``["a", "b", 0]``; bad paths None."""
    if not key.startswith("$."):
        return [key]
    rest = key[1:]
    parts: list[str | int] = []
    position = 0
    while position < len(rest):
        match = _PATH_TOKEN.match(rest, position)
        if match is None:
            return None
        parts.append(match.group(1) if match.group(1) is not None else int(match.group(2)))
        position = match.end()
    return parts or None


def _get(value: Any, path: list[str | int]) -> Any:
    for part in path:
        if isinstance(part, int):
            if not isinstance(value, list) or part >= len(value):
                return None
            value = value[part]
        else:
            if not isinstance(value, dict):
                return None
            value = value.get(part)
    return value


def _set(root: dict[str, Any], path: list[str | int], new: Any) -> None:
    target: Any = root
    for index, part in enumerate(path[:-1]):
        following = path[index + 1]
        child = _get(target, [part])
        if not isinstance(child, dict | list):
            child = [] if isinstance(following, int) else {}
            _assign(target, part, child)
        target = child
    _assign(target, path[-1], new)


def _assign(target: Any, part: str | int, value: Any) -> None:
    if isinstance(part, int):
        if not isinstance(target, list):
            return
        while len(target) <= part:
            target.append(None)
        target[part] = value
    elif isinstance(target, dict):
        target[part] = value
