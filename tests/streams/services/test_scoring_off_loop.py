"""A worker scores on its scoring threads, on the in-memory transport: the loop runs on while a model computes,
and a call past its model's time limit answers ``workflow_timeout`` (result and dead letter) while the rest flow on.

The slow model's ``predict`` waits on a gate the test opens, so "still scoring" is a state the test holds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time

import orjson
from streams_testing import eventually, model_package, samples

from routing import parse_rules
from schemas import headers as H
from schemas.errors import ErrorCode
from streams.ops.metrics import PipelineMetrics
from streams.rules.holder import RulesHolder
from streams.services.router import Router
from streams.services.worker import Worker
from streams.topics import TopicLayout
from streams.transport.memory import MemoryBroker, MemoryTransport
from streams.transport.settings import KafkaSettings
from workflows import InMemoryFactStore, ModelRegistry
from workflows.loading import _package_module, package_sha256
from workflows.skeleton import new_package

KAFKA = KafkaSettings(bootstrap="127.0.0.1:1", fetch_max_records=1000)
LAYOUT = TopicLayout(prefix="score.", request_partitions=1, shard_partitions=1, reply_partitions=1)
REPLIES = LAYOUT.replies("demo")


def slow_scoring(models, model_id: str, objective: str, *, time_limit_ms: int | None = None, **serving):
    """A package whose ``predict`` waits until the test sets its module's ``GATE`` (at most 20 s) and records
    each batch's size in its ``SIZES``; the module."""
    serving = {**({"time_limit_ms": time_limit_ms} if time_limit_ms else {}), **serving}
    package = model_package(models, model_id, objective, serving=serving, code=f"""
        # {models}: a module of its own per test
        import threading as _threading
        GATE = _threading.Event()
        SIZES = []
        _Base = Slow
        class Slow(_Base):
            def predict(self, features):
                SIZES.append(len(features))
                GATE.wait(20)
                return super().predict(features)
        """)
    return _package_module(package, "workflow", model_id, package_sha256(package))


def two_models(tmp_path, **slow):
    models = tmp_path / "models"
    module = slow_scoring(models, "slow@v1", "slow", **slow)
    new_package(models, "fast@v1", "fast")
    rules = dataclasses.replace(parse_rules({
        "shards": {"s1": {}}, "models": {"slow@v1": {"shard": "s1"}, "fast@v1": {"shard": "s1"}},
        "clients": {"demo": {"objectives": ["*"], "reply_topics": [REPLIES]}},
        "objectives": {"slow": {"shard_key": "context.user_id", "default": "slow@v1"},
                       "fast": {"shard_key": "context.user_id", "default": "fast@v1"}}}), version=1)
    return rules, ModelRegistry(models, InMemoryFactStore()), module


def work_offset(broker: MemoryBroker, request_id: str) -> int:
    [record] = [r for r in broker.records(LAYOUT.shard("s1")) if (H.REQUEST_ID, request_id.encode()) in list(r.headers)]
    return record.offset


def request(broker: MemoryBroker, request_id: str, objective: str, **fields) -> None:
    broker.produce(LAYOUT.requests, orjson.dumps({
        "request_id": request_id, "objective": objective, "client": "demo", "reply_to": REPLIES,
        "context": {"user_id": "u-1"}, "payload": {"x": 1}, **fields}))


def replies(broker: MemoryBroker) -> dict[str, dict]:
    return {r["request_id"]: r for r in map(orjson.loads, broker.values(REPLIES))}


async def run(broker, rules, registry, check):
    transport = MemoryTransport(broker)
    running = [Router(KAFKA, LAYOUT, RulesHolder(rules), group_id="router", transport=transport),
               Worker(KAFKA, LAYOUT, registry, shard="s1", group_id="worker.s1", transport=transport)]
    for service in running:
        await service.start()
    try:
        return await check(running[1])
    finally:
        for service in running:
            await service.stop()


async def test_a_call_past_its_time_limit_answers_workflow_timeout_and_the_worker_goes_on(tmp_path):
    rules, registry, slow = two_models(tmp_path, time_limit_ms=300)
    broker = MemoryBroker()
    request(broker, "slow-1", "slow")
    request(broker, "fast-1", "fast")

    async def check(worker):
        assert await eventually(lambda: {"slow-1", "fast-1"} <= set(replies(broker)), timeout=10)
        request(broker, "fast-2", "fast")  # the stuck call holds no batch after it
        assert await eventually(lambda: "fast-2" in replies(broker), timeout=10)
        assert worker.timeouts == 1 and worker.failed is None
        assert worker.executor.stuck == 1  # the call itself runs on, on a thread the pool replaced
        metrics = PipelineMetrics()
        metrics.bind([worker])
        assert samples(metrics.exposition().decode(), "scoreline_workflow_timeouts_total", model="slow@v1") == 1

    try:
        await run(broker, rules, registry, check)
    finally:
        slow.GATE.set()
    answered = replies(broker)
    assert answered["slow-1"]["status"] == "error"
    assert answered["slow-1"]["error"]["code"] == ErrorCode.WORKFLOW_TIMEOUT
    assert "300 ms" in answered["slow-1"]["error"]["message"]
    assert (answered["fast-1"]["status"], answered["fast-2"]["status"]) == ("ok", "ok")
    letters = [orjson.loads(v) for v in broker.values(LAYOUT.deadletter)]
    assert [(d["request_id"], d["code"]) for d in letters] == [("slow-1", ErrorCode.WORKFLOW_TIMEOUT)]


async def test_the_event_loop_runs_on_while_a_model_computes(tmp_path):
    rules, registry, slow = two_models(tmp_path)
    broker = MemoryBroker()
    request(broker, "slow-1", "slow")
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async def check(worker):
        # While the slow call holds a scoring thread, the loop ticks on (on the loop, it could not tick at all).
        before = ticks
        assert await eventually(lambda: ticks >= before + 20, timeout=10)
        assert "slow-1" not in replies(broker)
        slow.GATE.set()
        assert await eventually(lambda: "slow-1" in replies(broker), timeout=10)

    tick = asyncio.create_task(ticker())
    try:
        await run(broker, rules, registry, check)
    finally:
        slow.GATE.set()
        tick.cancel()
    assert replies(broker)["slow-1"]["status"] == "ok"


async def test_a_slow_model_holds_back_neither_the_other_models_nor_their_commits_past_its_own_requests(tmp_path):
    rules, registry, slow = two_models(tmp_path)
    broker = MemoryBroker()
    request(broker, "slow-1", "slow")

    async def check(worker):
        assert await eventually(lambda: worker._lanes.in_flight() == 1, timeout=10)
        for i in range(3):  # batches after the slow one's, each answered while it computes
            request(broker, f"fast-{i}", "fast")
            assert await eventually(lambda i=i: f"fast-{i}" in replies(broker), timeout=10)
        request(broker, "slow-2", "slow")  # queues behind the call in flight, for the model's next call
        assert await eventually(lambda: broker.committed("worker.s1"), timeout=5)
        held = work_offset(broker, "slow-1")
        assert all(offset <= held for offset in broker.committed("worker.s1").values())
        assert not {"slow-1", "slow-2"} & set(replies(broker))
        slow.GATE.set()
        assert await eventually(lambda: {"slow-1", "slow-2"} <= set(replies(broker)), timeout=10)
        assert await eventually(lambda: sum(broker.committed("worker.s1").values()) == 5, timeout=5)

    try:
        await run(broker, rules, registry, check)
    finally:
        slow.GATE.set()
    answered = broker.values(REPLIES)
    order = [orjson.loads(v)["request_id"] for v in answered]
    assert order.index("slow-1") < order.index("slow-2")  # one model's answers keep their arrival order
    assert {r["status"] for r in replies(broker).values()} == {"ok"} and len(answered) == 5


async def test_a_model_queue_is_scored_in_batches_of_its_max_cost_and_a_request_expiring_in_it_is_not_scored(
        tmp_path):
    rules, registry, slow = two_models(tmp_path, max_batch_cost=2)
    broker = MemoryBroker()
    request(broker, "slow-0", "slow")

    async def check(worker):
        assert await eventually(lambda: worker._lanes.in_flight() == 1, timeout=10)
        soon = int(time.time() * 1000) + 1500
        for i in range(1, 6):  # queue behind the call in flight; slow-3's deadline passes while it waits
            request(broker, f"slow-{i}", "slow", **({"deadline_ms": soon} if i == 3 else {}))
        assert await eventually(lambda: len(worker._lanes.lane("slow@v1").queue) == 5, timeout=10)
        assert await eventually(lambda: time.time() * 1000 > soon + 50, timeout=5)
        metrics = PipelineMetrics()
        metrics.bind([worker])
        queued = metrics.exposition().decode()
        slow.GATE.set()
        assert await eventually(lambda: len(replies(broker)) == 6, timeout=10)
        return queued, metrics.exposition().decode()

    try:
        queued, done = await run(broker, rules, registry, check)
    finally:
        slow.GATE.set()
    answered = replies(broker)
    assert answered["slow-3"]["status"] == "expired" and "queued" in answered["slow-3"]["error"]["message"]
    assert all(answered[f"slow-{i}"]["status"] == "ok" for i in (0, 1, 2, 4, 5))
    assert slow.SIZES == [1, 2, 2]  # slow-1 and slow-2, then slow-4 and slow-5: never more than the bound
    # What /metrics (and `scoreline top`) show of it: the queue while it waited, then each call's cost.
    # slow-3 left the queue when its deadline passed, answered at once, not when the call returned.
    assert samples(queued, "scoreline_scoring_queue_requests", model="slow@v1") == 4
    assert samples(queued, "scoreline_scoring_calls_in_flight", model="slow@v1") == 1
    assert samples(done, "scoreline_scoring_queue_requests", model="slow@v1") == 0
    assert samples(done, "scoreline_scoring_batch_cost_count", model="slow@v1") == 3
    assert samples(done, "scoreline_scoring_batch_cost_sum", model="slow@v1") == 5
    assert samples(done, "scoreline_scoring_queue_wait_seconds_count", model="slow@v1") == 5  # the scored ones
    assert samples(done, "scoreline_scoring_queue_wait_seconds_bucket", model="slow@v1", le="0.5") == 1  # slow-0
    assert samples(done, "scoreline_scoring_threads") >= 1
    assert samples(done, "scoreline_scoring_busy_seconds_total") > 1.0  # the gated call held a thread that long


def in_process_package(models, model_id: str, objective: str):
    """A pure-Python workflow that asks for a scoring process: it answers the pid it ran in, and ``{"x": -1}``
    makes its process die mid-call (``os._exit``)."""
    model_package(models, model_id, objective, serving={"executor": "processes"}, code="""
        import os as _os
        _Base = Py
        class Py(_Base):
            def predict(self, features):
                if (features == -1).any():
                    _os._exit(3)
                return super().predict(features)
            def postprocess(self, pre, scores):
                return [o._replace(value={**o.value, "pid": _os.getpid()}) if o.value else o
                        for o in super().postprocess(pre, scores)]
        """)


async def test_a_workflow_that_asks_for_processes_scores_in_one_and_a_dying_one_fails_only_its_call(tmp_path):
    models = tmp_path / "models"
    in_process_package(models, "py@v1", "py")
    rules = dataclasses.replace(parse_rules({
        "shards": {"s1": {}}, "models": {"py@v1": {"shard": "s1"}},
        "clients": {"demo": {"objectives": ["*"], "reply_topics": [REPLIES]}},
        "objectives": {"py": {"shard_key": "context.user_id", "default": "py@v1"}}}), version=1)
    registry = ModelRegistry(models, InMemoryFactStore())
    broker = MemoryBroker()

    def ask(request_id: str, x: int) -> None:
        broker.produce(LAYOUT.requests, orjson.dumps({
            "request_id": request_id, "objective": "py", "client": "demo", "reply_to": REPLIES,
            "context": {"user_id": "u-1"}, "payload": {"x": x}}))

    async def check(worker):
        ask("first", 1)
        assert await eventually(lambda: "first" in replies(broker), timeout=60)  # a spawned child: seconds
        ask("dies", -1)
        assert await eventually(lambda: "dies" in replies(broker), timeout=60)
        ask("after", 2)
        assert await eventually(lambda: "after" in replies(broker), timeout=60)
        return worker.executor.processes.restarts

    restarts = await run(broker, rules, registry, check)
    answered = replies(broker)
    assert answered["first"]["status"] == "ok" and answered["first"]["result"]["pid"] != os.getpid()
    assert answered["dies"]["status"] == "error" and answered["dies"]["error"]["code"] == ErrorCode.WORKFLOW_ERROR
    assert "scoring process died" in answered["dies"]["error"]["message"]
    assert answered["after"]["status"] == "ok"
    assert answered["after"]["result"]["pid"] != answered["first"]["result"]["pid"]  # a new pool
    assert restarts == 1
    letters = [orjson.loads(v) for v in broker.values(LAYOUT.deadletter)]
    assert [d["request_id"] for d in letters] == ["dies"]
