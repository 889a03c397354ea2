"""Signals sent by trigger_django."""

from __future__ import annotations

from django.dispatch import Signal

__all__ = ["input_sent"]

#: Sent after the send view delivered input to a run's input stream (the run accepted it).
#:
#: ``sender`` is the form class that validated the input; keyword arguments: ``user`` (who sent
#: it), ``run_id``, ``stream_id`` and ``data`` (the exact payload forwarded, server fields
#: included). Receivers run with ``asend_robust``: one that raises is logged, and the user still
#: sees the send succeed, because the run already has the input.
input_sent = Signal()
