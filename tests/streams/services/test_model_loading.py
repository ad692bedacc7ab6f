"""A worker while a model loads, on the in-memory transport: the other models' requests flow on.

A load here waits on a gate the test opens, so "still loading" is a state the test holds, not
a race it hopes to win. What the worker promises: requests for the loading model wait (held back
from the commit, so a crash replays them), bounded by their deadline; the rest are answered.
"""

from __future__ import annotations

import dataclasses
import textwrap
import time

import orjson
from streams_testing import eventually

from routing import parse_rules
from schemas import headers as H
from schemas.errors import ErrorCode
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
LAYOUT = TopicLayout(prefix="load.", request_partitions=1, shard_partitions=1, reply_partitions=1)
REPLIES = LAYOUT.replies("demo")


def gated(models, model_id: str, objective: str):
    """A package whose load waits until the test sets its module's ``GATE`` (at most 20 s); returns the module."""
    package = new_package(models, model_id, objective)
    # The path makes the package (and so its module, cached by digest) one of this test's own.
    (package / "workflow.py").write_text((package / "workflow.py").read_text() + f"# {models}\n" + textwrap.dedent("""
        import threading as _threading
        GATE = _threading.Event()
        _Base = Slow
        class Slow(_Base):
            def load(self, package):
                GATE.wait(20)
                super().load(package)
        """))
    return _package_module(package, "workflow", model_id, package_sha256(package))


def two_models(tmp_path):
    """Rules with a slow-loading objective and a fast one on one shard; the slow model's module."""
    models = tmp_path / "models"
    slow = gated(models, "slow@v1", "slow")
    new_package(models, "fast@v1", "fast")
    rules = dataclasses.replace(parse_rules({
        "shards": {"s1": {}}, "models": {"slow@v1": {"shard": "s1"}, "fast@v1": {"shard": "s1"}},
        "clients": {"demo": {"objectives": ["*"], "reply_topics": [REPLIES]}},
        "objectives": {"slow": {"shard_key": "context.user_id", "default": "slow@v1"},
                       "fast": {"shard_key": "context.user_id", "default": "fast@v1"}}}), version=1)
    return rules, ModelRegistry(models, InMemoryFactStore()), slow


def request(broker: MemoryBroker, request_id: str, objective: str, **fields) -> None:
    broker.produce(LAYOUT.requests, orjson.dumps({
        "request_id": request_id, "objective": objective, "client": "demo", "reply_to": REPLIES,
        "context": {"user_id": "u-1"}, "payload": {"x": 1}, **fields}))


def replies(broker: MemoryBroker) -> dict[str, dict]:
    return {r["request_id"]: r for r in map(orjson.loads, broker.values(REPLIES))}


def services(transport, rules, registry, **worker):
    return [Router(KAFKA, LAYOUT, RulesHolder(rules), group_id="router", transport=transport),
            Worker(KAFKA, LAYOUT, registry, shard="s1", group_id="worker.s1", transport=transport, **worker)]


async def run(running, check):
    for service in running:
        await service.start()
    try:
        return await check()
    finally:
        for service in running:
            await service.stop()


async def reply_while_loading(broker: MemoryBroker, running, slow, request_id: str) -> dict:
    """Run ``running`` until ``request_id`` is answered with the slow model's load held back; the reply."""

    async def answered():
        assert await eventually(lambda: request_id in replies(broker), timeout=10)

    try:
        await run(running, answered)
    finally:
        slow.GATE.set()
    return replies(broker)[request_id]


def work_offset(broker: MemoryBroker, request_id: str) -> int:
    [record] = [r for r in broker.records(LAYOUT.shard("s1"))
                if (H.REQUEST_ID, request_id.encode()) in list(r.headers)]
    return record.offset


async def test_requests_for_a_loading_model_wait_while_the_other_models_are_answered(tmp_path):
    rules, registry, slow = two_models(tmp_path)
    broker = MemoryBroker()
    request(broker, "slow-1", "slow")
    for i in range(5):
        request(broker, f"fast-{i}", "fast")

    async def check():
        assert await eventually(lambda: len(replies(broker)) == 5, timeout=10)
        assert "slow-1" not in replies(broker)  # the slow model is still loading: its request waits
        held = work_offset(broker, "slow-1")
        committed = broker.committed("worker.s1")
        assert await eventually(lambda: broker.committed("worker.s1"), timeout=5)
        assert all(offset <= held for offset in broker.committed("worker.s1").values()), committed
        request(broker, "fast-late", "fast")  # later batches flow on too
        assert await eventually(lambda: "fast-late" in replies(broker), timeout=10)
        slow.GATE.set()
        assert await eventually(lambda: "slow-1" in replies(broker), timeout=10)
        assert await eventually(lambda: sum(broker.committed("worker.s1").values()) == 7, timeout=5)

    try:
        await run(services(MemoryTransport(broker), rules, registry), check)
    finally:
        slow.GATE.set()
    assert {r["status"] for r in replies(broker).values()} == {"ok"}
    assert replies(broker)["slow-1"]["model"] == "slow@v1"


async def test_a_request_waiting_for_a_load_expires_at_its_deadline(tmp_path):
    rules, registry, slow = two_models(tmp_path)
    broker = MemoryBroker()
    request(broker, "slow-1", "slow", deadline_ms=int(time.time() * 1000) + 500)
    reply = await reply_while_loading(broker, services(MemoryTransport(broker), rules, registry), slow, "slow-1")
    assert (reply["status"], reply["error"]["code"]) == ("expired", ErrorCode.DEADLINE_EXPIRED)
    assert "while model slow@v1 loaded" in reply["error"]["message"]


async def test_a_request_without_a_deadline_waits_for_a_load_no_longer_than_the_workers_bound(tmp_path):
    rules, registry, slow = two_models(tmp_path)
    broker = MemoryBroker()
    request(broker, "slow-1", "slow")
    running = services(MemoryTransport(broker), rules, registry)
    running[1].load_wait_s = 0.3
    reply = await reply_while_loading(broker, running, slow, "slow-1")
    assert (reply["status"], reply["error"]["code"]) == ("error", ErrorCode.MODEL_UNAVAILABLE)
    assert "still loading after 0.3 s" in reply["error"]["message"]


async def test_a_request_still_waiting_at_stop_is_answered_after_a_restart(tmp_path):
    rules, registry, slow = two_models(tmp_path)
    broker = MemoryBroker()
    request(broker, "slow-1", "slow")
    request(broker, "fast-1", "fast")

    async def first():
        assert await eventually(lambda: "fast-1" in replies(broker), timeout=10)

    try:
        await run(services(MemoryTransport(broker), rules, registry), first)
    finally:
        slow.GATE.set()
    assert "slow-1" not in replies(broker)
    assert broker.committed("worker.s1")[next(iter(broker.committed("worker.s1")))] <= work_offset(broker, "slow-1")

    async def second():
        assert await eventually(lambda: "slow-1" in replies(broker), timeout=10)

    await run(services(MemoryTransport(broker), rules, registry), second)
    assert replies(broker)["slow-1"]["status"] == "ok"


async def test_a_new_rules_version_has_its_models_loaded_before_any_request_names_them(tmp_path):
    rules, registry, slow = two_models(tmp_path)
    slow.GATE.set()
    holder = RulesHolder(dataclasses.replace(rules, models={"fast@v1": "s1"}))
    worker = Worker(KAFKA, LAYOUT, registry, shard="s1", group_id="worker.s1",
                    transport=MemoryTransport(MemoryBroker()), rules=holder)

    async def check():
        assert await eventually(lambda: registry.loaded() == ("fast@v1",), timeout=10)
        holder.replace(dataclasses.replace(rules, version=2))
        assert await eventually(lambda: set(registry.loaded()) == {"fast@v1", "slow@v1"}, timeout=10)

    await run([worker], check)
    assert registry.counts["loads"] == 2  # each once: nothing asked for them, nothing loaded twice


async def test_moving_a_model_to_another_shard_loses_and_repeats_no_request(tmp_path):
    rules, registry, slow = two_models(tmp_path)
    slow.GATE.set()
    v1 = dataclasses.replace(rules, shards=("s1", "s2"))
    v2 = dataclasses.replace(v1, version=2, models={**v1.models, "fast@v1": "s2"})  # what --apply publishes
    broker, holder = MemoryBroker(), RulesHolder(v1)
    transport = MemoryTransport(broker)
    router = Router(KAFKA, LAYOUT, holder, group_id="router", transport=transport)
    for i in range(5):
        request(broker, f"before-{i}", "fast")
    await router.start()
    try:  # routed under v1: on s1's work topic, not scored yet (no worker runs)
        assert await eventually(lambda: len(broker.records(LAYOUT.shard("s1"))) == 5, timeout=10)
        holder.replace(v2)
        for i in range(5):
            request(broker, f"after-{i}", "fast")
        assert await eventually(lambda: len(broker.records(LAYOUT.shard("s2"))) == 5, timeout=10)
        workers = [Worker(KAFKA, LAYOUT, registry, shard=s, group_id=f"worker.{s}", transport=transport)
                   for s in ("s1", "s2")]

        async def answered():
            assert await eventually(lambda: len(broker.records(REPLIES)) >= 10, timeout=10)

        await run(workers, answered)
    finally:
        await router.stop()
    results = [orjson.loads(v) for v in broker.values(REPLIES)]
    assert sorted(r["request_id"] for r in results) == sorted([f"before-{i}" for i in range(5)] +
                                                              [f"after-{i}" for i in range(5)])  # once each
    assert {r["shard"] for r in results if r["request_id"].startswith("before")} == {"s1"}  # where it was routed
    assert {r["shard"] for r in results if r["request_id"].startswith("after")} == {"s2"}
    assert {(r["status"], r["rules_version"]) for r in results} == {("ok", 1), ("ok", 2)}


async def test_a_repository_that_cannot_be_read_answers_model_unavailable_and_the_worker_goes_on(tmp_path):
    from streams.repository import ModelRepository

    rules, registry, slow = two_models(tmp_path)
    slow.GATE.set()
    # A model only a repository could have, and a repository nobody can reach (a closed port).
    remote = dataclasses.replace(rules.objectives["fast"], name="remote", default="remote@v1")
    rules = dataclasses.replace(rules, models={**rules.models, "remote@v1": "s1"},
                                objectives={**rules.objectives, "remote": remote})
    unreachable = ModelRepository(KafkaSettings(bootstrap="127.0.0.1:1"), LAYOUT, cache_dir=tmp_path / "cache",
                                  timeout=1.0)
    broker = MemoryBroker()
    request(broker, "remote-1", "remote")
    request(broker, "fast-1", "fast")

    async def check():
        assert await eventually(lambda: {"remote-1", "fast-1"} <= replies(broker).keys(), timeout=20)

    await run(services(MemoryTransport(broker), rules, registry, repository=unreachable), check)
    remote, fast = replies(broker)["remote-1"], replies(broker)["fast-1"]
    assert (remote["status"], remote["error"]["code"]) == ("error", ErrorCode.MODEL_UNAVAILABLE)
    assert fast["status"] == "ok"
