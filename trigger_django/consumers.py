"""The stream consumer, kept importable from its first home: the live path is now the
``trigger_django.live`` package (see its modules)."""

from __future__ import annotations

from trigger_django.live.consumer import StreamConsumer
from trigger_django.live.protocol import (
    MAX_PARTS_PER_FRAME,
    MAX_SUBSCRIPTIONS,
    BadMessage,
    CloseCode,
    cursor_key,
)
from trigger_django.live.subscription import Subscription

__all__ = [
    "MAX_PARTS_PER_FRAME",
    "MAX_SUBSCRIPTIONS",
    "BadMessage",
    "CloseCode",
    "StreamConsumer",
    "Subscription",
    "cursor_key",
]
