"""Workflow calls in child processes, for workflows whose compute holds the GIL (pure Python).

numpy and ONNX Runtime release the GIL, so the scoring threads run their calls in parallel; a
workflow that computes in Python does not, and threads would take turns on one core. A package
that says so (manifest ``serving.executor: "processes"``) has its calls run in a pool of child
processes instead (one per scoring thread, started with ``spawn``: no fork of a process that
runs an event loop and threads). Each child loads the package itself, from its directory, the
first time it scores it (and again when the package's digest changes), with the facts of the
fact directory the worker loaded its own from. A model that reads facts from Kafka topics
(``scoreline run --facts kafka``) runs on the threads: a child has no materialiser.

A child that dies (a crash in native code, ``os._exit``) fails its call, not the worker: the
call's requests are answered ``workflow_error``, and the pool is started afresh for the next.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from workflows.base import Item, Model, Outcome
from workflows.facts import FactStore, InMemoryFactStore
from workflows.loading import build_model

__all__ = ["BrokenProcessPool", "ProcessScoring", "score_in_process"]

log = logging.getLogger(__name__)

_MODELS: dict[str, tuple[str, Model]] = {}
"""In a child: each package directory's model, with the digest it was loaded at."""
_FACTS: dict[str, FactStore] = {}


def score_in_process(directory: str, sha256: str, facts_dir: str | None,
                     requests: Sequence[tuple[Any, Any]]) -> list[Outcome]:
    """In a child process: score ``requests`` (context, payload pairs) with the package at ``directory``."""
    loaded = _MODELS.get(directory)
    if loaded is None or loaded[0] != sha256:
        facts = _FACTS.get(facts_dir or "")
        if facts is None:
            facts = _FACTS[facts_dir or ""] = InMemoryFactStore.from_dir(facts_dir) if facts_dir else \
                InMemoryFactStore()
        loaded = _MODELS[directory] = (sha256, build_model(directory, facts))
    return loaded[1].score_batch([Item(context, payload) for context, payload in requests])


class ProcessScoring:
    """A pool of ``processes`` children for workflow calls; started on first use, again after a child died."""

    def __init__(self, processes: int, *, name: str = "scoreline-scoring") -> None:
        self.processes = processes
        self.name = name
        self.restarts = 0
        "Pools started afresh after a child died."
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def submit(self, directory: str, sha256: str, facts_dir: str | None,
               requests: Sequence[tuple[Any, Any]]) -> Future[list[Outcome]]:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"))
            pool = self._pool
        try:
            return pool.submit(score_in_process, directory, sha256, facts_dir, list(requests))
        except BrokenProcessPool:
            self.broken(pool)
            return self.submit(directory, sha256, facts_dir, requests)

    def broken(self, pool: ProcessPoolExecutor | None = None) -> None:
        """A child died: the next call starts a new pool (the calls in the old one fail)."""
        with self._lock:
            if pool is None or pool is self._pool:
                old, self._pool = self._pool, None
                self.restarts += 1
            else:
                return
        log.error("%s: a scoring process died; starting new ones", self.name)
        if old is not None:
            old.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
