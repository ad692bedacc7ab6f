"""The scoring threads: calls run off the caller's thread, and a call abandoned past its limit is replaced."""

from __future__ import annotations

import threading

import pytest

from streams.scoring import ScoringExecutor


def test_calls_run_on_the_scoring_threads_and_return_their_value_or_exception():
    executor = ScoringExecutor(2, name="t-scoring")
    try:
        assert executor.submit(threading.current_thread).result(5).name == "t-scoring"
        with pytest.raises(ZeroDivisionError):
            executor.submit(lambda: 1 / 0).result(5)
    finally:
        executor.close()


def test_a_call_abandoned_past_its_limit_gets_a_replacement_thread():
    executor = ScoringExecutor(1)
    gate, started = threading.Event(), threading.Event()

    def stuck() -> str:
        started.set()
        gate.wait(20)
        return "late"

    try:
        hung = executor.submit(stuck)
        assert started.wait(5)
        executor.abandon(hung)
        assert executor.stuck == 1 and executor.abandoned == 1
        # With its only thread stuck, the pool still runs the next call.
        assert executor.submit(lambda: "next").result(5) == "next"
        gate.set()
        assert hung.result(5) == "late"
        assert executor.submit(lambda: "after").result(5) == "after"
        assert executor.stuck == 0
    finally:
        gate.set()
        executor.close()


def test_abandoning_a_call_not_yet_started_or_already_done_changes_nothing():
    executor = ScoringExecutor(1)
    try:
        done = executor.submit(lambda: 1)
        assert done.result(5) == 1
        executor.abandon(done)
        assert (executor.stuck, executor.abandoned) == (0, 0)
    finally:
        executor.close()


def test_an_executor_needs_a_thread():
    with pytest.raises(ValueError, match="at least one thread"):
        ScoringExecutor(0)
