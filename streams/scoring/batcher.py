"""Dynamic batching per model: each model's queue, its call in flight, and when its next batch starts.

The rule is the one Triton's dynamic batcher follows, per model:

* A model has ``max_calls_in_flight`` calls running at most; by default its share of the scoring
  threads: the threads divided among the models with requests, never all of them (a model whose
  first requests arrive always finds a thread), at least one. A model with the threads to itself
  (``Lanes.alone``: the only model its worker serves, on threads no other worker uses) gets
  every thread: there is no other model to keep one for. Requests that arrive while it has
  no room queue, and the next call takes them, oldest first. Calls are answered in
  the order they started, so a model's answers keep the order its requests arrived in even when
  a later call returns first.
* A batch is bounded by ``max_batch_cost`` (items, or what ``batch_cost`` counts: the candidates
  of a ranking request). A request that alone costs more is scored alone; 0 means no bound.
* With ``max_queue_delay_us`` 0 (the default) an idle model starts a batch at once: no added
  latency. Above 0 an idle model waits for a fuller batch until the oldest request has waited
  that long, or the queue reaches ``max_batch_cost``, or waiting longer would make a queued
  request miss its deadline, given the model's usual call time (a moving average of its calls).
* A request whose deadline passes while it queues is handed back as expired, never scored.

Requests come from any partition of the worker's shard: a batch is formed across partitions.
This module knows nothing of Kafka; ``Lanes`` is generic in what a request is.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
from collections import Counter, deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from workflows.packaging import ServingSpec

__all__ = ["COST_BUCKETS", "WAIT_BUCKETS_S", "Buckets", "Lane", "Lanes", "Waiting"]

W = TypeVar("W")
R = TypeVar("R")

EWMA_WEIGHT = 0.2
"How much one call moves a model's usual call time."

WAIT_BUCKETS_S = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
"How long requests queued for their model's call (seconds)."
COST_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
"What each call cost (items, or what the model's ``batch_cost`` counts)."


class Buckets:
    """A histogram kept as counts per bucket (not cumulative) and a sum, read at scrape time."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value


@dataclass
class Waiting(Generic[W]):
    """One request in a model's queue."""

    work: W
    cost: int
    arrived: float
    "When it was queued (monotonic seconds)."
    deadline_ms: float | None
    "Its deadline (epoch milliseconds), if it has one."


class Lane(Generic[W, R]):
    """One model's queue and its call in flight."""

    def __init__(self, spec: ServingSpec) -> None:
        self.spec = spec
        self.queue: deque[Waiting[W]] = deque()
        self.calls_in_flight: deque[tuple[asyncio.Task[R], list[W]]] = deque()
        "Its calls running now, oldest first, each with its requests: they are answered in this order."
        self.share = 1
        "Its calls in flight at most, unless its spec sets a bound (``Lanes`` keeps it)."
        self.first_deadline_ms: float | None = None
        "No queued request's deadline is earlier (it may be later, after requests left the queue)."
        self.call_ms: float | None = None
        "The model's usual call time, a moving average (None until its first call returns)."
        self.calls = 0
        self.timeouts = 0
        "Requests answered ``workflow_timeout`` (kept by the worker)."
        self.waits = Buckets(WAIT_BUCKETS_S)
        "How long each request queued before its call started."
        self.costs = Buckets(COST_BUCKETS)
        "What each call cost."

    def queued_cost(self) -> int:
        return sum(w.cost for w in self.queue)

    def due_at(self, now: float, now_ms: float) -> float | None:
        """When this lane's next batch should start (monotonic seconds; ``now`` or earlier: start it now).

        None: nothing to start (empty queue, or a call in flight).
        """
        # Calls that returned but wait to be answered in order hold no thread: only running ones count.
        running = sum(1 for call, _ in self.calls_in_flight if not call.done())
        if not self.queue or running >= (self.spec.max_calls_in_flight or self.share):
            return None
        delay = self.spec.max_queue_delay_us / 1e6
        bound = self.spec.max_batch_cost
        if delay <= 0 or (bound and self.queued_cost() >= bound):
            return now
        due = self.queue[0].arrived + delay
        usual_s = (self.call_ms or 0.0) / 1000
        for waiting in self.queue:  # the latest a request can start and still finish before its deadline
            if waiting.deadline_ms is not None:
                due = min(due, now + (waiting.deadline_ms - now_ms) / 1000 - usual_s)
        return due

    def take(self, now: float) -> list[W]:
        """The next batch: the oldest requests up to ``max_batch_cost`` (at least one)."""
        bound = self.spec.max_batch_cost
        batch: list[W] = []
        cost = 0
        while self.queue and (not batch or not bound or cost + self.queue[0].cost <= bound):
            waiting = self.queue.popleft()
            batch.append(waiting.work)
            cost += waiting.cost
            self.waits.observe(max(0.0, now - waiting.arrived))
        self.costs.observe(cost)
        return batch

    def observe(self, call_ms: float) -> None:
        """A call returned after ``call_ms``: update the usual call time."""
        self.calls += 1
        self.call_ms = call_ms if self.call_ms is None else (1 - EWMA_WEIGHT) * self.call_ms + EWMA_WEIGHT * call_ms


class Lanes(Generic[W, R]):
    """Every model's lane in one worker: queue requests, start due batches, collect returned calls.

    ``spec_of(model_id)`` gives a model's ``serving`` spec (read again whenever its lane is idle, so a
    reloaded manifest applies from the next batch);
    ``payload_of`` and ``deadline_of`` read a request; ``start(model_id, batch)`` starts a call.
    """

    def __init__(self, spec_of: Callable[[str], ServingSpec], *, payload_of: Callable[[W], object],
                 deadline_of: Callable[[W], float | None], threads: int = 1,
                 position_of: Callable[[W], tuple[Hashable, int]] | None = None) -> None:
        self.threads = threads
        self._position_of = position_of
        """Where a request is (its partition, its offset): :meth:`lowest` keeps the commit behind it until answered."""
        self._heaps: dict[Hashable, list[int]] = {}
        """Per partition, the offsets of the requests not answered yet (a min-heap, answered ones removed lazily)."""
        self._answered: dict[Hashable, Counter[int]] = {}
        "The scoring threads the calls run on: what the models' default shares divide."
        self.alone = False
        """Whether one model has the threads to itself (set by the worker; :meth:`set_alone`)."""
        self._spec_of = spec_of
        self._payload_of = payload_of
        self._deadline_of = deadline_of
        self.lanes: dict[str, Lane[W, R]] = {}

    def lane(self, model_id: str) -> Lane[W, R]:
        lane = self.lanes.get(model_id)
        if lane is None:
            lane = self.lanes[model_id] = Lane(self._spec_of(model_id))
            self._share()
        return lane

    def set_alone(self, alone: bool) -> None:
        """Whether the threads serve one model only (then it may use all of them), and the shares again."""
        if alone != self.alone:
            self.alone = alone
            self._share()

    def _share(self) -> None:
        """Each model's default bound on calls in flight: its share of the threads, one left over for a model
        whose first requests arrive, unless no other model can (``alone``)."""
        spare = 0 if self.alone else 1
        share = max(1, min(self.threads - spare, self.threads // max(1, len(self.lanes))))
        for lane in self.lanes.values():
            lane.share = share

    def add(self, model_id: str, works: list[W], now: float) -> None:
        """Queue ``works`` for ``model_id``, in order."""
        lane = self.lane(model_id)
        if not lane.queue and not lane.calls_in_flight:
            lane.spec = self._spec_of(model_id)
        spec = lane.spec
        for work in works:
            deadline = self._deadline_of(work)
            lane.queue.append(Waiting(work, spec.cost(self._payload_of(work)), now, deadline))
            if deadline is not None and (lane.first_deadline_ms is None or deadline < lane.first_deadline_ms):
                lane.first_deadline_ms = deadline
            if self._position_of is not None:
                where, offset = self._position_of(work)
                heapq.heappush(self._heaps.setdefault(where, []), offset)

    def lowest(self) -> dict[Hashable, int]:
        """Per partition, the lowest offset of a request queued or in a call: the commit must stop there.

        Kept as one heap per partition, so asking costs the partitions, not the requests waiting.
        """
        out = {}
        for where in list(self._heaps):
            heap, answered = self._heaps[where], self._answered.get(where)
            while heap and answered and answered[heap[0]]:
                answered[heap[0]] -= 1
                heapq.heappop(heap)
            if heap:
                out[where] = heap[0]
            else:
                del self._heaps[where]
                self._answered.pop(where, None)
        return out

    def _forget(self, works: Iterable[W]) -> None:
        """``works`` are answered (or will never be, by this member): they no longer hold the commit back."""
        if self._position_of is None:
            return
        for work in works:
            where, offset = self._position_of(work)
            self._answered.setdefault(where, Counter())[offset] += 1

    def expired(self, now_ms: float) -> list[tuple[str, W]]:
        """Take out the queued requests whose deadline passed (they are answered expired, not scored)."""
        out: list[tuple[str, W]] = []
        for model_id, lane in self.lanes.items():
            # Only a lane whose earliest deadline passed is looked through (the earliest is kept as requests queue).
            if lane.first_deadline_ms is None or lane.first_deadline_ms >= now_ms:
                continue
            keep: deque[Waiting[W]] = deque()
            first: float | None = None
            for waiting in lane.queue:
                if waiting.deadline_ms is not None and waiting.deadline_ms < now_ms:
                    out.append((model_id, waiting.work))
                else:
                    keep.append(waiting)
                    if waiting.deadline_ms is not None and (first is None or waiting.deadline_ms < first):
                        first = waiting.deadline_ms
            lane.queue, lane.first_deadline_ms = keep, first
        self._forget(work for _, work in out)
        return out

    def start_due(self, start: Callable[[str, list[W]], asyncio.Task[R]], now: float, now_ms: float, *,
                  unexpired_only: bool = False) -> list[asyncio.Task[R]]:
        """Start every batch that is due now; return their calls.

        ``unexpired_only``: leave alone a lane holding a request whose deadline passed (it must be answered
        expired first, by whoever calls :meth:`expired`): for starting calls the moment one returns.
        """
        started = []
        for model_id, lane in self.lanes.items():
            if unexpired_only and lane.first_deadline_ms is not None and lane.first_deadline_ms < now_ms:
                continue
            while (due := lane.due_at(now, now_ms)) is not None and due <= now:
                batch = lane.take(now)
                call = start(model_id, batch)
                lane.calls_in_flight.append((call, batch))
                started.append(call)
        return started

    def next_due(self, now: float, now_ms: float) -> float | None:
        """Seconds until the earliest batch that waits for a fuller batch is due (None: none waits)."""
        dues = [d for lane in self.lanes.values() if (d := lane.due_at(now, now_ms)) is not None]
        return max(0.0, min(dues) - now) if dues else None

    def returned(self) -> Iterator[tuple[str, list[W], asyncio.Task[R]]]:
        """Each call that returned, once: its model, its requests and its task (the lane is free again)."""
        for model_id, lane in list(self.lanes.items()):
            # In the order the calls started: a later call that finished first waits for the one before it.
            while lane.calls_in_flight and lane.calls_in_flight[0][0].done():
                call, works = lane.calls_in_flight.popleft()
                self._forget(works)
                yield model_id, works, call

    def in_flight(self) -> int:
        return sum(len(lane.calls_in_flight) for lane in self.lanes.values())

    def works(self) -> Iterator[W]:
        """Every request not answered yet: in a call or queued."""
        for lane in self.lanes.values():
            for _, in_call in lane.calls_in_flight:
                yield from in_call
            for waiting in lane.queue:
                yield waiting.work

    def cancel(self) -> None:
        """Cancel every call in flight (never answered, never committed: replayed by the next owner)."""
        for lane in self.lanes.values():
            for call, _ in lane.calls_in_flight:
                call.cancel()
            lane.calls_in_flight.clear()
            lane.queue.clear()
        self._heaps.clear()
        self._answered.clear()

    def __bool__(self) -> bool:
        """Whether any request is in a call or queued."""
        return any(lane.queue or lane.calls_in_flight for lane in self.lanes.values())
