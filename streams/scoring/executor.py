"""A bounded pool of scoring threads that survives calls which never return.

A workflow call that runs past its model's time limit cannot be stopped (Python has no way to
kill a thread); the worker answers its items with ``workflow_timeout`` and goes on. The pool then
counts that thread as *stuck* and starts a replacement, so ``threads`` calls can still run at
once; a stuck thread that finally returns leaves the pool instead of taking more work. At most
``threads`` replacements are live at a time: a model that hangs every call cannot grow the
process without bound (past that, calls queue, and their time limit answers them).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from streams.scoring.processes import ProcessScoring

__all__ = ["DEFAULT_THREADS", "ScoringExecutor", "default_threads"]

log = logging.getLogger(__name__)

T = TypeVar("T")

THREADS_ENV = "SCORELINE_SCORING_THREADS"


def default_threads() -> int:
    """``$SCORELINE_SCORING_THREADS``, else the cores this process may use (at least 1)."""
    raw = os.environ.get(THREADS_ENV)
    if raw:
        return max(1, int(raw))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


DEFAULT_THREADS = default_threads()
"""The scoring threads of a worker process when nothing says otherwise."""

_STOP = object()


class ScoringExecutor:
    """``threads`` daemon threads running submitted calls in order; :meth:`abandon` a call past its limit."""

    def __init__(self, threads: int = DEFAULT_THREADS, *, name: str = "scoreline-scoring") -> None:
        if threads < 1:
            raise ValueError(f"a scoring executor needs at least one thread, got {threads}")
        self.threads = threads
        self.name = name
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._live = 0
        """Threads taking work (stuck ones excluded)."""
        self._stuck: set[Future[Any]] = set()
        self._running: dict[int, Future[Any]] = {}
        """The call each thread runs now, by thread id."""
        self._busy_s = 0.0
        self._started = time.monotonic()
        self._closed = False
        self._unreplaced = 0
        """Stuck calls that got no replacement (the cap was reached): their threads stay when they return."""
        self.abandoned = 0
        """Calls given up on past their time limit, in all."""
        self.users: set[int] = set()
        """The workers scoring on these threads (their ids): one alone may give its only model every thread."""
        self.processes = ProcessScoring(threads, name=name)
        """Child processes for workflows that compute in Python (``serving.executor: "processes"``), started
        on first use, as many as threads."""
        for _ in range(threads):
            self._spawn()

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``fn(*args)`` on a scoring thread; the future holds its value or exception."""
        if self._closed:
            raise RuntimeError(f"{self.name}: submit after close")
        future: Future[T] = Future()
        self._jobs.put((future, fn, args))
        return future

    def abandon(self, future: Future[Any]) -> None:
        """Give up on ``future`` (past its time limit): a replacement thread takes its place while it runs on."""
        with self._lock:
            if future.done() or future in self._stuck or future not in self._running.values():
                return  # finished meanwhile, or never started (it runs when a thread is free)
            self.abandoned += 1
            self._stuck.add(future)
            self._live -= 1
            if len(self._stuck) > self.threads:
                self._unreplaced += 1
                log.error("%s: %d calls are stuck past their time limits; no more replacement threads",
                          self.name, len(self._stuck))
                return
        self._spawn()

    @property
    def stuck(self) -> int:
        """Calls abandoned that are still running."""
        with self._lock:
            return len(self._stuck)

    @property
    def busy_seconds(self) -> float:
        """Thread seconds spent in calls that returned, in all (its rate over threads: how busy the pool is)."""
        with self._lock:
            return self._busy_s

    def utilisation(self) -> float:
        """The share of thread time spent in calls since the pool started (0 to 1)."""
        with self._lock:
            busy = self._busy_s
        return busy / max(1e-9, (time.monotonic() - self._started) * self.threads)

    def close(self) -> None:
        """Let the threads finish the calls queued, then exit (returns at once; they are daemons)."""
        if self._closed:
            return
        self._closed = True
        for _ in range(self.threads):
            self._jobs.put(_STOP)
        self.processes.close()

    def _spawn(self) -> None:
        with self._lock:
            self._live += 1
        threading.Thread(target=self._work, name=self.name, daemon=True).start()

    def _work(self) -> None:
        me = threading.get_ident()
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            future, fn, args = job
            if not future.set_running_or_notify_cancel():
                continue
            with self._lock:
                self._running[me] = future
            began = time.monotonic()
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
                future.set_exception(exc)
            with self._lock:
                self._busy_s += time.monotonic() - began
                del self._running[me]
                if future in self._stuck:
                    self._stuck.discard(future)
                    if not self._unreplaced:
                        return  # its replacement took its place
                    self._unreplaced -= 1
                    self._live += 1
