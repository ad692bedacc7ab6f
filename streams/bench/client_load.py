"""The latency phases as a producer service sees them: every request through :class:`ScoreClient`.

The load generator's own sender (``streams.bench.loadgen``) pre-encodes requests and publishes
them in whole batches, which is how a pipeline is saturated cheaply. Users do not call scoreline
that way: they build each request with ``ScoreClient.request`` and await ``score``, which
publishes it, waits on the client's reply partition and matches the answer by request id. This
driver does exactly that for the unloaded and fixed-rate phases (``LoadPlan.driver = "client"``),
so the figures include everything the client costs: validation, its producer, its reply consumer.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np

from schemas.errors import ScorelineError
from streams.bench.layout import CLIENT
from streams.client import ScoreClient
from streams.topics import TopicLayout
from workflows import sample_items

__all__ = ["ClientLoad", "percentiles"]

TICK_S = 0.002
"How often the open-loop sender catches up with the clock (as the load generator's)."


class ClientLoad:
    """``unloaded`` and ``offered`` phases through one started :class:`ScoreClient` of the bench's client.

    ``plan`` is the load generator's ``LoadPlan`` (its bootstrap, prefix, run, objectives and timeouts).
    """

    def __init__(self, plan: Any, *, per_objective: int = 1000) -> None:
        self.plan = plan
        self.client = ScoreClient(plan.bootstrap, CLIENT, layout=TopicLayout(prefix=plan.prefix))
        items = {o: sample_items(o, per_objective, seed=11) for o in plan.objectives}
        self.mix = [(o, items[o][i]) for i in range(per_objective) for o in plan.objectives]
        self.next_n = 0

    async def start(self) -> None:
        await self.client.start()

    async def stop(self) -> None:
        await self.client.stop()

    async def _one(self, timeout: float) -> float | None:
        """One request, built and awaited as a user would; its seconds, or None if it failed or timed out."""
        objective, item = self.mix[self.next_n % len(self.mix)]
        request_id = f"{self.plan.run}-c{self.next_n:010d}"
        self.next_n += 1
        began = time.perf_counter()
        try:
            await self.client.score(objective, item.context, item.payload, timeout=timeout, request_id=request_id)
        except ScorelineError:
            return None
        return time.perf_counter() - began

    async def warm_up(self, answers: int = 20) -> None:
        """Requests one at a time until ``answers`` came back (the client's partition is read from its end)."""
        deadline = time.perf_counter() + self.plan.warmup_timeout
        answered = 0
        while answered < answers:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"ScoreClient: no {answers} answers within {self.plan.warmup_timeout}s")
            answered += await self._one(timeout=5.0) is not None

    async def unloaded(self, count: int, timeout: float = 10.0) -> dict:
        """``count`` requests one after another, each sent once the one before is answered."""
        seconds = [await self._one(timeout) for _ in range(count)]
        answered = [s for s in seconds if s is not None]
        return {"requests": count, "unanswered": count - len(answered), **percentiles(answered)}

    async def offered(self, rate: float) -> dict:
        """Open loop at ``rate`` requests/s, each awaited in its own task; percentiles after the first second."""
        seconds = self.plan.latency_duration
        began = time.perf_counter()
        record_from, end = began + min(1.0, seconds / 4), began + seconds
        counted: list[asyncio.Task[float | None]] = []
        others: list[asyncio.Task[float | None]] = []
        sent = 0
        while (now := time.perf_counter()) < end:
            for _ in range(int(rate * (now - began)) - sent):
                task = asyncio.create_task(self._one(self.plan.drain_timeout))
                (counted if now >= record_from else others).append(task)
                sent += 1
            await asyncio.sleep(TICK_S)
        results: list[Any] = await asyncio.gather(*counted, *others)
        latencies = [s for s in results[:len(counted)] if s is not None]
        return {"offered_rps": round(rate, 1), "sent": sent, "unanswered": sum(r is None for r in results),
                "driver": "ScoreClient", **percentiles(latencies)}


def percentiles(seconds: list[float]) -> dict:
    """p50, p95 and p99 of ``seconds`` in milliseconds, and how many (the bench's latency figures)."""
    if not seconds:
        return {"p50": None, "p95": None, "p99": None, "samples": 0}
    ms = np.asarray(seconds) * 1000
    p50, p95, p99 = np.percentile(ms, (50, 95, 99))
    return {"p50": round(float(p50), 2), "p95": round(float(p95), 2), "p99": round(float(p99), 2),
            "samples": len(seconds)}
