"""A token-bucket limiter for requests-per-minute and tokens-per-minute API budgets (asyncio)."""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """Refills at `per_minute / 60` units a second, holding at most one second's worth.

    A one-second bucket keeps the flow smooth (providers enforce per-minute limits over short
    windows). An acquire larger than the bucket waits for a full bucket and leaves it in debt,
    so big requests still pass and the budget holds on average.
    """

    def __init__(self, per_minute: float):
        if per_minute <= 0:
            raise ValueError(f"a rate limit must be positive, got {per_minute!r} per minute")
        self.rate = per_minute / 60.0  # units per second
        self.capacity = max(self.rate, 1.0)
        self.level = self.capacity
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self, amount: float) -> float:
        """Take `amount` units, waiting as needed (callers are served in turn).

        Returns:
            Seconds waited.
        """
        waited = 0.0
        async with self._lock:
            while True:
                self._refill()
                need = min(amount, self.capacity)
                if self.level >= need:
                    self.level -= amount
                    return waited
                delay = (need - self.level) / self.rate
                await asyncio.sleep(delay)
                waited += delay

    def adjust(self, amount: float) -> None:
        """Take (positive) or give back (negative) units without waiting, e.g. once the real
        token usage of a request is known."""
        self._refill()
        self.level = min(self.capacity, self.level - amount)


class RateLimiter:
    """Requests-per-minute and tokens-per-minute budgets together (None: unlimited)."""

    def __init__(self, requests_per_minute: float | None, tokens_per_minute: float | None):
        self.requests = TokenBucket(requests_per_minute) if requests_per_minute else None
        self.tokens = TokenBucket(tokens_per_minute) if tokens_per_minute else None

    async def acquire(self, tokens: float) -> float:
        """Wait for one request and `tokens` (an estimate) of budget; returns seconds waited."""
        waited = 0.0
        if self.requests is not None:
            waited += await self.requests.acquire(1)
        if self.tokens is not None:
            waited += await self.tokens.acquire(tokens)
        return waited

    def settle(self, estimated: float, actual: float) -> None:
        """Correct the token budget once a response reports its real usage."""
        if self.tokens is not None:
            self.tokens.adjust(actual - estimated)
