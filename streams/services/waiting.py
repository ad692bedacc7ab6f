"""Requests waiting for their model to load: who waits, until when, and what the commit must not pass.

A worker parks the requests for a model that is still loading and goes on with the rest. Each
batch asks the room which waiting requests can go (their model is ready) and which have waited
too long (past their deadline, or the worker's bound); the batch loop asks it, before every
commit, for the lowest waiting offset of each partition. All of it costs in proportion to the
models and partitions that wait, not to the requests that wait: a cold start parks thousands.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Collection
from typing import Generic, NamedTuple, TypeVar

from streams.transport.protocols import TopicPartition

__all__ = ["Overdue", "WaitingRoom"]

W = TypeVar("W")


class _Waiting(NamedTuple, Generic[W]):
    work: W
    key: tuple[TopicPartition, int]
    due: float
    "Monotonic time by which it must be answered (its deadline, or the longest a request waits)."
    expires: bool
    "Whether ``due`` is the request's own deadline (else the worker's bound)."


class Overdue(NamedTuple, Generic[W]):
    """A request that waited as long as it may: ``expired`` if that was its own deadline."""

    model: str
    work: W
    expired: bool


class WaitingRoom(Generic[W]):
    """Requests per model, in arrival order; a heap of waiting offsets per partition."""

    def __init__(self, wait_s: float) -> None:
        self.wait_s = wait_s
        """How long a request without a deadline waits."""
        self._by_model: dict[str, list[_Waiting[W]]] = {}
        self._due: dict[str, float] = {}
        self._live: set[tuple[TopicPartition, int]] = set()
        self._offsets: dict[TopicPartition, list[int]] = {}

    def __bool__(self) -> bool:
        return bool(self._live)

    def __contains__(self, model: object) -> bool:
        return model in self._by_model

    def count(self, model: str) -> int:
        """How many requests wait for ``model``."""
        return len(self._by_model.get(model, ()))

    def park(self, model: str, work: W, tp: TopicPartition, offset: int, deadline_ms: int | None,
             *, now: float, now_ms: float) -> None:
        """``work`` waits for ``model``; a record parked already (replayed after a failed batch) is not parked again."""
        key = (tp, offset)
        if key in self._live:
            return
        self._live.add(key)
        heapq.heappush(self._offsets.setdefault(tp, []), offset)
        due, expires = now + self.wait_s, False
        if deadline_ms is not None and now + (deadline_ms - now_ms) / 1000 < due:
            due, expires = now + (deadline_ms - now_ms) / 1000, True
        self._by_model.setdefault(model, []).append(_Waiting(work, key, due, expires))
        self._due[model] = min(self._due.get(model, math.inf), due)

    def release(self, ready: Callable[[str], bool], owned: Collection[TopicPartition], *, now: float
                ) -> tuple[dict[str, list[W]], list[Overdue[W]]]:
        """The waiting requests whose model is ``ready``, by model; and those that waited too long.

        Requests of partitions no longer ``owned`` leave without either: the partition's new owner
        replays them from the commit that stopped short of them.
        """
        go: dict[str, list[W]] = {}
        overdue: list[Overdue[W]] = []
        for model in list(self._by_model):
            is_ready = ready(model)
            if not is_ready and now < self._due[model]:
                continue  # nothing of this model's is due: not even looked at
            kept: list[_Waiting[W]] = []
            for waiting in self._by_model.pop(model):
                if waiting.key[0] in owned and not is_ready and now < waiting.due:
                    kept.append(waiting)
                    continue
                self._live.discard(waiting.key)
                if waiting.key[0] not in owned:
                    continue
                if is_ready:
                    go.setdefault(model, []).append(waiting.work)
                else:
                    overdue.append(Overdue(model, waiting.work, waiting.expires))
            if kept:
                self._by_model[model] = kept
                self._due[model] = min(w.due for w in kept)
            else:
                del self._due[model]
        return go, overdue

    def held(self) -> dict[TopicPartition, int]:
        """The lowest waiting offset of each partition that has one."""
        if not self._live:
            self._offsets.clear()
            return {}
        out = {}
        for tp in list(self._offsets):
            heap = self._offsets[tp]
            while heap and (tp, heap[0]) not in self._live:
                heapq.heappop(heap)  # left the room since: dropped lazily
            if heap:
                out[tp] = heap[0]
            else:
                del self._offsets[tp]
        return out
