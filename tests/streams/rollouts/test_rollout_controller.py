"""The rollout controller's decisions, on the in-memory transport: results in, rules versions and rollout records out.

Each test runs the controller as ``scoreline run`` does (its lease in a consumer group, a rules
watcher keeping the rules in force, the evidence read from the reply topics) over the double,
and writes the results a router and its workers would: each request answered by the model the
rules in force give it. What is Kafka's (the lease moving between controllers, fencing of a
deposed one, a controller killed mid-step, real traffic through real workers) stays on the
broker in ``tests/faults/test_rollouts.py``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
import pytest
from streams_testing import rules_under

from routing import rules_to_doc
from streams.rollouts.client import RolloutClient
from streams.rollouts.controller import RolloutController
from streams.rollouts.records import FINISHED, Rollout, RolloutSpec
from streams.rules.holder import RulesHolder
from streams.rules.publisher import RulesPublisher
from streams.rules.watcher import RulesWatcher
from streams.topics import TopicLayout
from streams.transport.memory import MemoryBroker, MemoryTransport
from streams.transport.settings import KafkaSettings

KAFKA = KafkaSettings(bootstrap="127.0.0.1:1")  # never connected
LAYOUT = TopicLayout(prefix="mem.")
REPLIES = f"{LAYOUT.prefix}replies.demo"
CANDIDATE, INCUMBENT = "title-ranking@v2", "title-ranking@v1"


def spec(*guards: str, step_s: float = 0.2) -> RolloutSpec:
    return RolloutSpec("title-ranking", CANDIDATE, (10.0, 50.0, 100.0), step_s, 40, 3000,
                       guards or ("error_rate<=0.05", "latency_p90<=2"))


class Traffic:
    """Results of title-ranking requests, as the workers would publish them under the rules in force."""

    def __init__(self, broker: MemoryBroker, holder: RulesHolder, *, candidate_errors: float = 0.0,
                 candidate_ms: float = 5.0) -> None:
        self.broker, self.holder = broker, holder
        self.candidate_errors, self.candidate_ms = candidate_errors, candidate_ms
        self.rng = random.Random(7)
        self.sent = 0

    def result(self) -> dict:
        rules = self.holder()
        objective = rules.objective("title-ranking")
        canary = objective.canary
        model = canary.model if canary is not None and self.rng.random() * 100 < canary.percent else objective.default
        ms = (self.candidate_ms if model == CANDIDATE else 5.0) * self.rng.uniform(0.8, 1.2)
        failed = model == CANDIDATE and self.rng.random() < self.candidate_errors
        self.sent += 1
        return {"request_id": f"r-{self.sent}", "objective": "title-ranking", "model": model, "cell": None,
                "rules_version": rules.version, "status": "error" if failed else "ok", "traffic": "live",
                "timings_ms": {"total": round(ms, 3)}}

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            for _ in range(40):
                doc = self.result()
                self.broker.produce(REPLIES, orjson.dumps(doc), key=doc["request_id"].encode(),
                                    partition=self.sent % 2)
            await asyncio.sleep(0.01)


@dataclass
class Rig:
    broker: MemoryBroker
    holder: RulesHolder
    client: RolloutClient
    publisher: RulesPublisher
    controller: RolloutController


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    broker = MemoryBroker()
    transport = MemoryTransport(broker)
    await transport.ensure_topics([s for s in LAYOUT.specs(()) if s.name in (LAYOUT.rules, LAYOUT.rollouts)])
    broker.create_topic(REPLIES, 2)
    holder = RulesHolder(rules_under(LAYOUT))
    async with RulesWatcher(KAFKA, LAYOUT, holder, transport=transport), \
            RolloutController(KAFKA, LAYOUT, holder, group_id=f"{LAYOUT.prefix}rollout", tick_s=0.05,
                              transport=transport) as controller:
        await controller.wait_assigned(5)
        yield Rig(broker, holder, RolloutClient(KAFKA, LAYOUT, timeout=2.0, transport=transport),
                  RulesPublisher(KAFKA, LAYOUT, published_by="someone by hand", timeout=2.0, transport=transport),
                  controller)


async def run(rig: Rig, rollout_spec: RolloutSpec, traffic: Traffic, *, until=None, timeout: float = 20.0) -> Rollout:
    """Start the rollout under ``traffic``; return it once ``until(rollout)`` holds (default: it has ended)."""
    until = until or (lambda r: r.state in FINISHED)
    stop = asyncio.Event()
    load = asyncio.create_task(traffic.run(stop))
    try:
        command = await rig.client.send("start", rollout_spec.objective, rollout_spec, by="test")
        applied, rollout = await rig.client.wait_applied(command, 5)
        assert applied and rollout is not None, "the controller did not apply the start"
        deadline = time.monotonic() + timeout
        while not until(rollout):
            assert time.monotonic() < deadline, f"rollout still {rollout.state}: {rollout.reason}"
            await asyncio.sleep(0.05)
            rollout = (await rig.client.read()).current[rollout_spec.objective]
        return rollout
    finally:
        stop.set()
        await load


async def test_a_healthy_candidate_steps_through_to_promotion(rig):
    rollout = await run(rig, spec(), Traffic(rig.broker, rig.holder))
    assert rollout.state == "promoted", rollout.reason
    assert [s.percent for s in rollout.steps] == [10, 50, 100]  # begins at the rules' own 10 % canary
    assert [s.decision for s in rollout.steps] == ["advance", "advance", "promoted"]
    versions = [s.rules_version for s in rollout.steps]
    assert versions == [1, 2, 3] and rollout.final_rules_version == 3  # one publish per step, in order
    assert all(s.evidence["candidate"]["results"] >= 40 for s in rollout.steps[:2])
    latest = await rig.publisher.latest()
    assert latest.version == 3 and latest.published_by.startswith(f"rollout {rollout.id} of {CANDIDATE}")
    objective = latest.rules().objective("title-ranking")
    assert (objective.default, objective.canary) == (CANDIDATE, None)
    steps = (await rig.publisher.history())[:2]
    assert [r.rules().objective("title-ranking").canary.percent for r in steps] == [10, 50]


async def test_a_candidate_failing_a_third_of_its_requests_is_rolled_back_in_its_first_step(rig):
    rollout = await run(rig, spec(), Traffic(rig.broker, rig.holder, candidate_errors=1 / 3))
    assert rollout.state == "rolled_back" and "error_rate failed" in rollout.reason
    first, *rest = rollout.steps
    assert first.decision == "roll_back"
    assert [j["guard"] for j in first.judgements if j["verdict"] == "fail"] == ["error_rate"]
    assert all(s.rules_version is None for s in rest)  # no second step was ever published
    latest = await rig.publisher.latest()
    assert rollout.final_rules_version == latest.version == 2  # the step's version, then the canary taken away
    objective = latest.rules().objective("title-ranking")
    assert (objective.default, objective.canary) == (INCUMBENT, None)


async def test_a_candidate_three_times_slower_is_rolled_back_on_latency(rig):
    rollout = await run(rig, spec(), Traffic(rig.broker, rig.holder, candidate_ms=15.0))
    assert rollout.state == "rolled_back", rollout.reason
    assert [j["guard"] for j in rollout.current.judgements if j["verdict"] == "fail"] == ["latency_p90"]
    assert (await rig.publisher.latest()).rules().objective("title-ranking").canary is None


async def test_rules_published_by_hand_mid_step_pause_the_rollout_and_resume_begins_there(rig):
    traffic = Traffic(rig.broker, rig.holder)
    rollout = await run(rig, spec(step_s=60), traffic, until=lambda r: r.current.rules_version is not None)
    assert rollout.current.percent == 10  # a step of a minute: still the first when the hand-made publish lands
    doc = rules_to_doc((await rig.publisher.latest()).rules())
    doc["objectives"]["title-ranking"]["canary"]["percent"] = 35
    hand = (await rig.publisher.publish_version(doc)).record.version
    stop = asyncio.Event()
    load = asyncio.create_task(traffic.run(stop))
    try:
        deadline = time.monotonic() + 10
        while rollout.state != "paused":
            assert time.monotonic() < deadline, rollout
            await asyncio.sleep(0.05)
            rollout = (await rig.client.read()).current["title-ranking"]
        assert f"rules version {hand} changed title-ranking" in rollout.reason
        assert (await rig.publisher.latest()).version == hand  # the hand-made version is never overwritten
        applied, resumed = await rig.client.wait_applied(await rig.client.send("resume", "title-ranking", by="ops"), 5)
        assert applied and resumed is not None
        deadline = time.monotonic() + 10
        while resumed.current.rules_version is None or resumed.current.rules_version <= hand:
            assert time.monotonic() < deadline, resumed
            await asyncio.sleep(0.05)
            resumed = (await rig.client.read()).current["title-ranking"]
    finally:
        stop.set()
        await load
    assert resumed.state == "running" and resumed.current.percent == 35  # the hand-made 35 % is kept
    assert [s.percent for s in resumed.steps] == [10, 35, 50, 100]  # the paused step stays in the history
