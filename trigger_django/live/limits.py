"""Subscribe limits: rates per socket and per user (token buckets), live subscriptions per user.

Every subscribe counts against the rates, refused ones included, so a page cannot churn
subscriptions to spend the site's upstream rate limit.
"""

from __future__ import annotations

import math
import time
from collections import Counter

__all__ = ["RateLimit", "live_by_user", "release", "reset", "user_rate"]


class RateLimit:
    """``rate`` events per minute, in bursts of up to ``rate``."""

    __slots__ = ("per_second", "rate", "stamp", "tokens")

    def __init__(self, rate: int) -> None:
        self.rate = max(rate, 1)
        self.per_second = self.rate / 60
        self.tokens = float(self.rate)
        self.stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.per_second)
        self.stamp = now

    def take(self) -> float | None:
        """Count one event; ``None`` if allowed, else the seconds until one will be."""
        self._refill()
        if self.tokens >= 1:
            self.tokens -= 1
            return None
        return math.ceil((1 - self.tokens) / self.per_second * 10) / 10

    @property
    def idle(self) -> bool:
        self._refill()
        return self.tokens >= self.rate


_user_rates: dict[str, RateLimit] = {}


def user_rate(user_key: str, rate: int) -> RateLimit:
    """The subscribe rate limit of one user in this process."""
    limit = _user_rates.get(user_key)
    if limit is None or limit.rate != rate:
        if len(_user_rates) >= 10_000:
            for key in [k for k, v in _user_rates.items() if v.idle]:
                del _user_rates[key]
        limit = _user_rates[user_key] = RateLimit(rate)
    return limit


#: Live subscriptions per user in this process (``MAX_STREAMS_PER_USER``).
live_by_user: Counter[str] = Counter()


def release(user_key: str) -> None:
    live_by_user[user_key] -= 1
    if live_by_user[user_key] <= 0:
        del live_by_user[user_key]


def reset() -> None:
    """Forget every user's rate and count (tests)."""
    _user_rates.clear()
    live_by_user.clear()
