"""API budgets (asyncio): requests and tokens per minute as token buckets, and requests in flight.

An API engine draws from a `Budget` around every HTTP call: `acquire(estimated tokens)` before
it, `release(estimated, actual)` after it. `LocalBudget` holds the limits in this process; a
pipeline stage hands its engines a budget shared by the whole actor pool instead
(`pipelines.budget`), so the configured limits hold for the job, not per actor.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


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


class Budget(Protocol):
    """What an API engine draws from around each HTTP call."""

    async def acquire(self, tokens: float) -> None:
        """Wait for a free slot, one request and `tokens` (an estimate) of the budget."""
        ...

    async def release(self, estimated: float, actual: float | None) -> None:
        """Free the slot; settle the token budget with the real usage (None: the call failed,
        the estimate stays spent)."""
        ...


class LocalBudget:
    """Requests/tokens per minute (None: unlimited) and at most `max_concurrency` in flight."""

    def __init__(self, requests_per_minute: float | None, tokens_per_minute: float | None,
                 max_concurrency: int):
        self.requests = TokenBucket(requests_per_minute) if requests_per_minute else None
        self.tokens = TokenBucket(tokens_per_minute) if tokens_per_minute else None
        self._slots = asyncio.Semaphore(max_concurrency)

    async def acquire(self, tokens: float) -> None:
        if self.requests is not None:
            await self.requests.acquire(1)
        if self.tokens is not None:
            await self.tokens.acquire(tokens)
        await self._slots.acquire()

    async def release(self, estimated: float, actual: float | None) -> None:
        self._slots.release()
        if self.tokens is not None and actual is not None:
            self.tokens.adjust(actual - estimated)
