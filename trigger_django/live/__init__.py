"""The live path: consumer lifecycle, subscriptions, the per-process hub and the Redis fan-out."""

from __future__ import annotations
