"""Fault injection against the real broker: every request accounted for after each fault.

The scenarios live in ``fault_scenarios.py`` and also drive ``scripts/fault_report.py``,
which prints the table of ``docs/reliability.md``.
"""

from __future__ import annotations

import pytest
from fault_scenarios import SCENARIOS, check

from schemas.messages import Status

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]


def _passes(tally) -> None:
    assert not check(tally), f"{check(tally)}: {tally}"
    # One status per result record, duplicates included.
    assert sum(tally.statuses.values()) == tally.results + tally.duplicated


def _all_ok(tally) -> bool:
    return set(tally.statuses) == {Status.OK}


async def test_kill_worker(env):
    tally = await SCENARIOS["kill_worker"](env)
    _passes(tally)
    assert _all_ok(tally)


async def test_kill_router(env):
    tally = await SCENARIOS["kill_router"](env)
    _passes(tally)
    assert _all_ok(tally)


async def test_kill_comparator(env):
    tally = await SCENARIOS["kill_comparator"](env)
    print(f"kill_comparator: {tally.row()}")  # the figures of docs/reliability.md, with -s
    _passes(tally)
    # Both sides of every pair are produced in this scenario: a pair closed as timed_out lost a side.
    assert set(tally.statuses) == {"matched"}, tally.statuses


async def test_restart_broker(env):
    tally = await SCENARIOS["restart_broker"](env)
    _passes(tally)
    assert _all_ok(tally)


async def test_scale_workers(env):
    tally = await SCENARIOS["scale_workers"](env)
    _passes(tally)
    assert _all_ok(tally)


async def test_rolling_upgrade(env):
    tally = await SCENARIOS["rolling_upgrade"](env)
    print(f"rolling_upgrade: {tally.row()}")
    _passes(tally)
    assert _all_ok(tally)
    assert tally.note.endswith("[0, 0]"), tally.note  # each old worker stopped cleanly on SIGTERM


async def test_poison_request(env):
    tally = await SCENARIOS["poison_request"](env)
    _passes(tally)
    poisoned = int(tally.note.split()[0])
    # The poison is isolated: exactly the marked requests fail, each with an error result and a dead letter.
    assert tally.statuses.get(Status.ERROR) == poisoned and set(tally.statuses) == {Status.OK, Status.ERROR}
    assert tally.dead_letters == poisoned


async def test_slow_workflow(env):
    tally = await SCENARIOS["slow_workflow"](env)
    _passes(tally)
    assert set(tally.statuses) <= {Status.OK, Status.EXPIRED}
    assert tally.statuses.get(Status.EXPIRED, 0) > 0  # the deadlines were really missed
    assert tally.results == tally.requests  # an expired request is answered, not dropped


async def test_a_start_on_a_fresh_broker_logs_no_error(tmp_path, registry, caplog):
    """The first start on a new broker (no offsets topic yet) waits for the group coordinator, printing no ERROR."""
    import logging

    from fault_scenarios import Env, private_broker

    from streams.services.pipeline import Pipeline, PipelineOptions
    from streams.transport.settings import KafkaSettings

    async with private_broker(tmp_path) as broker:
        env = Env.make(KafkaSettings(bootstrap=broker.settings.bootstrap), "fresh.", tmp_path, registry)
        caplog.set_level(logging.WARNING)
        async with Pipeline(env.kafka, env.layout, env.rules, env.registry,
                            PipelineOptions(roles=("router", "worker", "shadow"))) as p:
            await p.wait_ready()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors  # before the wait: four GroupCoordinatorNotAvailableError lines
