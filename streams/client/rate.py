"""Request rates: reading ``500/s``-style limits, and pacing sends with a token bucket."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable

from schemas.errors import ErrorCode, InvalidMessage

__all__ = ["TokenBucket", "parse_rate"]

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*(s|sec|m|min|h|hour))?\s*$")
_PER = {None: 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0}


def parse_rate(text: str | None) -> float | None:
    """Requests per second from ``500``, ``500/s``, ``3000/m`` or ``10000/h``; None for no limit.

    Raises:
        InvalidMessage: ``invalid_value`` naming ``rate``.
    """
    if text is None or text.strip().lower() in ("", "none", "unlimited"):
        return None
    match = _RATE.match(text.lower())
    if not match or float(match.group(1)) <= 0:
        raise InvalidMessage(ErrorCode.INVALID_VALUE,
                             f"rate must look like 500/s, 3000/m or 10000/h (a positive number), got {text!r}",
                             field="rate")
    return float(match.group(1)) / _PER[match.group(2)]


class TokenBucket:
    """Allows ``rate`` events per second on average, with bursts of at most ``burst``.

    ``clock`` is injectable so the arithmetic is tested without sleeping.
    """

    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        # A tenth of a second's worth by default: smooth enough, yet the producer still batches.
        self.burst = burst if burst is not None else max(1.0, rate / 10)
        self.clock = clock
        self.tokens = self.burst
        self.updated = clock()

    def delay(self, n: float = 1.0) -> float:
        """Take ``n`` tokens; return how long to wait before using them (0 when they were there)."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    async def acquire(self, n: float = 1.0) -> None:
        """Wait until ``n`` tokens are available, and take them."""
        wait = self.delay(n)
        if wait > 0:
            await asyncio.sleep(wait)
