"""One API budget for a whole stage (or service): requests/tokens per minute and requests in
flight, held by a small Ray actor that every engine of the stage's actor pool (or of the
service's Corrector replicas) draws from.

Without it each pool actor or replica would build its own limiter, and `max_actors: 2` would
double the configured budget. The engines see the same `lema.engines.budget.Budget` interface as the
in-process budget; each request costs two actor calls (about a millisecond each), nothing next
to an API call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import ray

from lema.config import EngineConfig, OpenAIOptions
from lema.engines.budget import LocalBudget


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class BudgetActor:
    """The stage's budget (an async actor: waiting callers do not block each other)."""

    def __init__(self, requests_per_minute: float | None, tokens_per_minute: float | None,
                 max_concurrency: int):
        self.budget = LocalBudget(requests_per_minute, tokens_per_minute, max_concurrency)

    async def acquire(self, tokens: float) -> None:
        await self.budget.acquire(tokens)

    async def release(self, estimated: float, actual: float | None) -> None:
        await self.budget.release(estimated, actual)


class SharedBudget:
    """The engine-side handle of a BudgetActor (picklable: pool actors receive it)."""

    def __init__(self, actor: Any):
        self.actor = actor

    async def acquire(self, tokens: float) -> None:
        await self.actor.acquire.remote(tokens)

    async def release(self, estimated: float, actual: float | None) -> None:
        self.actor.release.remote(estimated, actual)  # not awaited: off the request's critical path


@contextlib.contextmanager
def stage_budget(engine: EngineConfig | None) -> Iterator[SharedBudget | None]:
    """A budget shared by every engine of a stage's pool (openai backend; None for others),
    from `engine.openai`'s limits, for as long as the stage runs."""
    if engine is None or engine.backend != "openai":
        yield None
        return
    actor = _budget_actor(engine.openai)
    try:
        yield SharedBudget(actor)
    finally:
        ray.kill(actor, no_restart=True)


def named_budget(name: str, opts: OpenAIOptions) -> SharedBudget:
    """The budget actor called `name` (created detached on first use, so replicas that come and
    go share it for the cluster's life), for engines that outlive no stage: Serve replicas."""
    return SharedBudget(_budget_actor(opts, name=name, namespace="lema", lifetime="detached",
                                      get_if_exists=True))


def _budget_actor(opts: OpenAIOptions, **options: Any) -> Any:
    """A BudgetActor holding `opts`' limits; enough actor threads for every waiting caller."""
    return BudgetActor.options(max_concurrency=max(1000, 4 * opts.max_concurrency), **options).remote(
        opts.requests_per_minute, opts.tokens_per_minute, opts.max_concurrency)
