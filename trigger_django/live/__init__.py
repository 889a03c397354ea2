"""The live path: WebSocket consumer, wire protocol, subscriptions and the per-process hub.

``protocol`` (message schema, close codes, frame encoding), ``subscription`` (one viewer's cursor
and flow control, one socket's byte budget), ``hub`` (one upstream reader per feed and process,
shared by every subscription), ``streams`` (the output-stream feed source), ``limits`` (subscribe
rate limits) and ``consumer`` (the Channels consumer: lifecycle and dispatch).
"""

from __future__ import annotations
