"""Guarded rollouts under steady traffic on a real broker, shared by the tests and ``scripts/fault_report.py``.

Each scenario streams title-ranking requests at a steady rate through a pipeline, starts a
rollout of ``title-ranking@v2`` (which the example rules hold as a 10 % canary), and waits, with
a deadline, until the rollout ends. It returns a :class:`RolloutOutcome`: how the rollout ended
and why, each step's rules version, samples and time to its decision, and the delivery tally of
every request sent meanwhile (nothing lost; every result names the rules version that routed it).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from fault_scenarios import Env, Ledger, Role, Tally, _submit, watching

from routing import rules_to_doc
from streams.client.score_client import ScoreClient
from streams.rollouts.client import RolloutClient
from streams.rollouts.records import FINISHED, Rollout, RolloutSpec
from streams.rules.publisher import RulesPublisher
from streams.services.pipeline import Pipeline, PipelineOptions
from streams.transport.kafka import aiokafka_producer
from workflows import Item, ModelRegistry, Outcome, sample_items

__all__ = ["RolloutOutcome", "ROLLOUT_SCENARIOS", "CANDIDATE", "INCUMBENT"]

CANDIDATE, INCUMBENT = "title-ranking@v2", "title-ranking@v1"
RATE = 80.0
"""Requests per second of the steady stream."""
STEPS = (10.0, 50.0, 100.0)
GUARDS = ("error_rate<=0.05", "latency_p90<=2")
"""Guards a test-sized stream can decide in seconds: a p99 interval needs 381 results per side, and passing
an error-rate margin of one point 381 candidate results (the defaults, for production rates)."""
STEP_S = 3.0
MIN_SAMPLES = 80
MAX_SAMPLES = 3000
ROLLOUT_TIMEOUT = 150.0


@dataclass
class RolloutOutcome:
    """How one rollout scenario ended."""

    scenario: str
    state: str
    reason: str
    steps: list[dict[str, Any]]
    """Per step: percent, rules version, decision, candidate and incumbent samples, seconds to decision."""
    seconds: float
    """From the start command to the rollout's end."""
    tally: Tally
    unversioned: int = 0
    """Results that name no rules version."""
    versions_seen: list[int] = field(default_factory=list)
    rollout: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def spec(steps: Sequence[float] = STEPS, guards: Sequence[str] = GUARDS, *, min_samples: int = MIN_SAMPLES,
         step_s: float = STEP_S) -> RolloutSpec:
    return RolloutSpec("title-ranking", CANDIDATE, tuple(steps), step_s, min_samples, MAX_SAMPLES, tuple(guards))


async def steady(env: Env, ledger: Ledger, stop: asyncio.Event, rate: float = RATE) -> None:
    """Title-ranking requests at ``rate``/s from users spread over the bucket space, until ``stop``."""
    items = sample_items("title-ranking", 4000, seed=11)
    async with ScoreClient(env.kafka, "demo", layout=env.layout) as client:
        pending = []
        began, i = time.monotonic(), 0
        while not stop.is_set():
            item = items[i % len(items)]
            context = dict(item.context) | {"user_id": f"u-{i}"}  # fresh users: every request a new bucket
            request = client.request("title-ranking", context, dict(item.payload))
            ledger.sent[request.request_id] = time.monotonic()
            pending.append(await _submit(client, request))
            i += 1
            await asyncio.sleep(max(0.0, began + i / rate - time.monotonic()))
        await asyncio.gather(*pending)


async def _run_rollout(env: Env, scenario: str, rollout_spec: RolloutSpec, *, during=None,
                       settle_s: float = 90.0) -> RolloutOutcome:
    """Stream, start the rollout, run ``during(client, rollout)`` on each poll, wait for the end, settle."""
    ledger, stop = Ledger(), asyncio.Event()
    client = RolloutClient(env.kafka, env.layout)
    async with watching(env, ledger) as tail:
        load = asyncio.create_task(steady(env, ledger, stop))
        try:
            assert await tail.wait_for(lambda: len(ledger.results) >= 20, timeout=60), "no traffic answered"
            began = time.monotonic()
            await client.check_start(rollout_spec, env.rules)
            command = await client.send("start", rollout_spec.objective, rollout_spec, by="test")
            applied, rollout = await client.wait_applied(command, 60)
            assert applied and rollout is not None, "no controller applied the start"
            while rollout.state not in FINISHED:
                assert time.monotonic() - began < ROLLOUT_TIMEOUT, f"rollout still {rollout.state}: {rollout}"
                if during is not None:
                    await during(client, rollout)
                await asyncio.sleep(0.5)
                rollout = (await client.read()).current[rollout_spec.objective]
            seconds = time.monotonic() - began
            final = rollout.final_rules_version
            if final is not None:  # traffic on the final version too: the routers followed it
                assert await tail.wait_for(lambda: any(r.rules_version == final for _, r in ledger.results),
                                           timeout=30), f"no result routed by the final version {final}"
        finally:
            stop.set()
            await load
        await tail.wait_for(ledger.all_accounted, timeout=settle_s)
    versions = sorted({r.rules_version for _, r in ledger.results if r.rules_version is not None})
    return RolloutOutcome(scenario=scenario, state=rollout.state, reason=rollout.reason, steps=_steps(rollout),
                          seconds=round(seconds, 1), tally=ledger.tally(scenario, "rollout under steady traffic"),
                          unversioned=sum(1 for _, r in ledger.results if r.rules_version is None),
                          versions_seen=versions, rollout=rollout.to_json())


def _steps(rollout: Rollout) -> list[dict[str, Any]]:
    out = []
    for step in rollout.steps:
        evidence = step.evidence or {}
        out.append({"percent": step.percent, "rules_version": step.rules_version, "decision": step.decision,
                    "candidate": (evidence.get("candidate") or {}).get("results"),
                    "incumbent": (evidence.get("incumbent") or {}).get("results"),
                    "seconds": round((step.ended_ms - step.started_ms) / 1000, 1)
                    if step.ended_ms and step.started_ms else None,
                    "failed": [j["guard"] for j in step.judgements if j["verdict"] == "fail"]})
    return out


# -- the candidates ----------------------------------------------------------------------------


def _third(item: Item) -> bool:
    return zlib.crc32(str(item.context.get("user_id")).encode()) % 3 == 0


class _Candidate:
    """The candidate model, made to fail a third of its requests or to sleep before scoring."""

    def __init__(self, model: Any, *, fail_third: bool, sleep_s: float) -> None:
        self._model, self._fail_third, self._sleep_s = model, fail_third, sleep_s
        self.id = model.id

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def score_batch(self, items: Sequence[Item]) -> list[Outcome]:
        if self._fail_third and any(_third(item) for item in items):
            raise RuntimeError("candidate bug: fails on a third of the users")
        if self._sleep_s:
            time.sleep(self._sleep_s * len(items))  # CPU-bound, as a heavier model would be
        return self._model.score_batch(items)


class CandidateRegistry:
    """The example registry, with the candidate wrapped in :class:`_Candidate`."""

    def __init__(self, registry: ModelRegistry, *, fail_third: bool = False, sleep_s: float = 0.0) -> None:
        self._registry, self._fail_third, self._sleep_s = registry, fail_third, sleep_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self._registry, name)

    def get(self, model_id: str, **options: Any) -> Any:
        model = self._registry.get(model_id, **options)
        if model_id != CANDIDATE:
            return model
        return _Candidate(model, fail_third=self._fail_third, sleep_s=self._sleep_s)


# -- the scenarios -----------------------------------------------------------------------------


async def healthy_with_controller_killed(env: Env) -> RolloutOutcome:
    """A healthy candidate, the controller a process of its own, ``kill -9``'d once the second step is in force."""
    controller = Role(env, "rollout", name="controller")
    killed: list[int] = []

    async def kill_in_second_step(client: RolloutClient, rollout: Rollout) -> None:
        if not killed and rollout.step == 1 and rollout.current.rules_version is not None:
            killed.append(rollout.current.rules_version)
            controller.kill()
            await controller.start()

    async with Pipeline(env.kafka, env.layout, env.rules, env.registry, PipelineOptions(roles=("router", "worker"))) \
            as pipeline:
        await pipeline.wait_ready()
        try:
            await controller.start()
            outcome = await _run_rollout(env, "healthy_controller_killed", spec(), during=kill_in_second_step)
        finally:
            controller.stop_all()
    outcome.tally.note = f"controller killed in the step of rules version {killed[0]}" if killed else "not killed"
    return outcome


async def controller_paused_past_its_session(env: Env) -> dict[str, Any]:
    """Fencing: controller A runs a rollout and is stopped (SIGSTOP) past its session timeout; B takes over
    under a newer epoch; A resumes (SIGCONT). What A wrote or writes under its old epoch never counts."""
    import signal

    from streams.rollouts.records import encode

    client = RolloutClient(env.kafka, env.layout)
    first, second = Role(env, "rollout", name="controller-a"), Role(env, "rollout", name="controller-b")
    seen: dict[str, Any] = {}
    try:
        await first.start()
        command = await client.send("start", "title-ranking", spec(steps=(20, 60, 100), min_samples=10**6),
                                    by="test")
        assert (await client.wait_applied(command, 60))[0]
        running = await _wait(client, lambda r: r.current.rules_version is not None)
        seen["epoch_a"] = (await client.read()).epoch
        first.procs[-1].send_signal(signal.SIGSTOP)
        await second.start()
        # B becomes active once A's session (10 s) has expired: it writes the next epoch.
        deadline = time.monotonic() + 60
        while (await client.read()).epoch <= seen["epoch_a"]:
            assert time.monotonic() < deadline, "the second controller never took over"
            await asyncio.sleep(0.5)
        seen["epoch_b"] = (await client.read()).epoch
        command = await client.send("pause", "title-ranking", by="ops")  # B applies it, under its epoch
        assert (await client.wait_applied(command, 60))[0]
        first.procs[-1].send_signal(signal.SIGCONT)
        # What A would write as it resumes, still believing the lease is its own: the running step, epoch A.
        stale = dataclasses.replace(running, epoch=seen["epoch_a"], reason="written by the deposed controller")
        producer = aiokafka_producer(env.kafka, "test-stale-controller")
        await producer.start()
        try:
            await producer.send_and_wait(env.layout.rollouts, encode(stale), key=b"title-ranking", partition=0)
        finally:
            await producer.stop()
        seen["log"] = await client.read()
        # A, resumed, finds its lease gone and stands by; the rollout stays as B left it.
        seen["after"] = await _wait(client, lambda r: r.state == "paused", timeout=30)
        seen["a_log"] = first.log.read_text(errors="replace")
    finally:
        with contextlib.suppress(ProcessLookupError):
            first.procs[-1].send_signal(signal.SIGCONT)
        first.stop_all()
        second.stop_all()
    return seen


async def failing_third(env: Env) -> RolloutOutcome:
    """A candidate whose workflow fails for a third of the users: rolled back in its first step."""
    registry = CandidateRegistry(env.registry, fail_third=True)
    async with Pipeline(env.kafka, env.layout, env.rules, registry,  # type: ignore[arg-type]
                        PipelineOptions(roles=("router", "worker", "rollout"))) as pipeline:
        await pipeline.wait_ready()
        return await _run_rollout(env, "failing_third", spec())


SLOW_S = 0.015
"""The slow candidate's extra time per request: about three times the incumbent's total here."""


async def three_times_slower(env: Env) -> RolloutOutcome:
    """A candidate three times slower than the incumbent: rolled back on the latency guard.

    The router and the incumbent's shard (s1) run in processes of their own, so the candidate's
    shard (s2, in this process) being slow does not slow the incumbent down too.
    """
    others = [Role(env, "router"), Role(env, "worker", name="worker-s1", args=("--shard", "s1"))]
    registry = CandidateRegistry(env.registry, sleep_s=SLOW_S)
    try:
        for role in others:
            await role.start()
        async with Pipeline(env.kafka, env.layout, env.rules, registry,  # type: ignore[arg-type]
                            PipelineOptions(roles=("worker", "rollout"), shards=["s2"])) as pipeline:
            await pipeline.wait_ready()
            return await _run_rollout(env, "three_times_slower", spec())
    finally:
        for role in others:
            role.stop_all()


async def hand_published_rules(env: Env) -> dict[str, Any]:
    """A rules version published by hand mid-rollout pauses it; resume re-applies the step; abort ends it."""
    client = RolloutClient(env.kafka, env.layout)
    seen: dict[str, Any] = {}
    async with Pipeline(env.kafka, env.layout, env.rules, env.registry,
                        PipelineOptions(roles=("router", "worker", "rollout"))) as pipeline:
        await pipeline.wait_ready()
        slow = spec(steps=(20, 60, 100), min_samples=10**6)  # never advances: only the hand-made change moves it
        command = await client.send("start", "title-ranking", slow, by="test")
        assert (await client.wait_applied(command, 60))[0]
        rollout = await _wait(client, lambda r: r.current.rules_version is not None)
        seen["step_version"] = rollout.current.rules_version
        publisher = RulesPublisher(env.kafka, env.layout, published_by="someone by hand")
        latest = await publisher.latest()
        assert latest is not None
        doc = dict(latest.doc)
        doc["objectives"] = dict(doc["objectives"])
        doc["objectives"]["title-ranking"] = dict(doc["objectives"]["title-ranking"]) | {
            "canary": {"model": CANDIDATE, "percent": 35}}
        seen["hand_version"] = (await publisher.publish_version(doc)).record.version
        seen["paused"] = await _wait(client, lambda r: r.state == "paused")
        seen["metrics"] = pipeline.metrics.exposition().decode()
        try:
            await client.check_start(slow, env.rules)
        except Exception as exc:  # noqa: BLE001 - the refusal is what is checked
            seen["second_start"] = exc
        command = await client.send("resume", "title-ranking", by="test")
        assert (await client.wait_applied(command, 60))[0]
        seen["resumed"] = await _wait(client, lambda r: r.state == "running" and r.current.rules_version is not None
                                      and r.current.rules_version > seen["hand_version"])
        command = await client.send("abort", "title-ranking", by="test")
        assert (await client.wait_applied(command, 60))[0]
        seen["aborted"] = (await client.read()).current["title-ranking"]
        seen["rules"] = (await publisher.latest()).rules()  # type: ignore[union-attr]
    return seen


async def publish_raced_by_hand(env: Env, monkeypatch: Any) -> dict[str, Any]:
    """A hand publish lands between the controller's read of the rules and its write of a step: the step is
    refused (compare-and-set on the rules topic), nothing is overwritten, and the rollout pauses."""
    from streams.rollouts.controller import RolloutController

    client = RolloutClient(env.kafka, env.layout)
    hand = RulesPublisher(env.kafka, env.layout, published_by="someone by hand")
    seen: dict[str, Any] = {}
    publish = RolloutController._publish

    async def someone_publishes_first(self, rollout, rules, what, base):  # the first step only: then the race is over
        if "hand_version" not in seen:
            latest = await hand.latest()
            doc = rules_to_doc(latest.rules() if latest is not None else env.rules)
            doc["objectives"]["fraud-score"] = dict(doc["objectives"]["fraud-score"]) | {"shadow": []}
            seen["hand_version"] = (await hand.publish_version(doc)).record.version
        return await publish(self, rollout, rules, what, base)
    monkeypatch.setattr(RolloutController, "_publish", someone_publishes_first)
    async with Pipeline(env.kafka, env.layout, env.rules, env.registry,
                        PipelineOptions(roles=("router", "worker", "rollout"))) as pipeline:
        await pipeline.wait_ready()
        command = await client.send("start", "title-ranking", spec(steps=(20, 60, 100), min_samples=10**6),
                                    by="test")
        assert (await client.wait_applied(command, 60))[0]
        seen["paused"] = await _wait(client, lambda r: r.state == "paused")
        seen["latest"] = await hand.latest()
    return seen


async def shadow_gate(env: Env) -> dict[str, Any]:
    """Agreement guards judge the candidate's shadow comparisons before any live traffic reaches it.

    title-ranking@v2's comparisons disagree (top-k overlap about 0.4, the guard wants 0.8): its
    rollout ends before its first step. fraud-score@v2's agree (bands in 196 of 200): its first
    step is published, beside the other objective's rollout.
    """
    client = RolloutClient(env.kafka, env.layout)
    producer = aiokafka_producer(env.kafka, "test-comparisons", linger_ms=5)
    await producer.start()
    try:
        for i in range(200):
            for objective, model, agreement in (
                    ("title-ranking", CANDIDATE, {"kind": "ranking", "top_k_overlap": 0.3 + 0.2 * (i % 2)}),
                    ("fraud-score", "fraud-score@v2", {"kind": "probability", "band_agrees": i % 50 != 0})):
                doc = {"request_id": f"{objective}-{i}", "objective": objective, "primary_model": "x",
                       "shadow_model": model, "matched": True, "agreement": agreement}
                await producer.send(env.layout.shadow_comparisons, orjson.dumps(doc), key=doc["request_id"].encode())
        await producer.flush()
    finally:
        await producer.stop()
    async with Pipeline(env.kafka, env.layout, env.rules, env.registry,
                        PipelineOptions(roles=("router", "worker", "rollout"))) as pipeline:
        await pipeline.wait_ready()
        gated = spec(guards=("agreement:top_k_overlap>=0.8",))
        agreeing = dataclasses.replace(spec(steps=(25, 100), guards=("agreement:band_agrees>=0.9",),
                                            min_samples=10**6), objective="fraud-score", candidate="fraud-score@v2")
        for rollout_spec in (gated, agreeing):
            command = await client.send("start", rollout_spec.objective, rollout_spec, by="test")
            assert (await client.wait_applied(command, 60))[0]
        seen: dict[str, Any] = {"gated": await _wait(client, lambda r: r.state in FINISHED),
                                "agreeing": await _wait(client, lambda r: r.current.rules_version is not None,
                                                        objective="fraud-score")}
        seen["rules"] = (await RulesPublisher(env.kafka, env.layout).latest()).rules()  # type: ignore[union-attr]
    return seen


async def _wait(client: RolloutClient, condition, timeout: float = 60.0, objective: str = "title-ranking") -> Rollout:
    deadline = time.monotonic() + timeout
    while True:
        rollout = (await client.read()).current.get(objective)
        if rollout is not None and condition(rollout):
            return rollout
        assert time.monotonic() < deadline, f"rollout never got there: {rollout}"
        await asyncio.sleep(0.3)


ROLLOUT_SCENARIOS = {
    "healthy_controller_killed": healthy_with_controller_killed,
    "failing_third": failing_third,
    "three_times_slower": three_times_slower,
}
