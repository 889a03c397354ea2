"""System checks for the mistakes users make when wiring trigger_django up."""

from __future__ import annotations
