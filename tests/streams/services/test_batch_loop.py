"""The batch loop's own semantics, on the in-memory transport (no broker: milliseconds each).

What is Kafka's (groups, rebalances, idempotence, partitioning, real I/O errors) is tested
against the real broker elsewhere; here the loop itself: what it commits and when, what it
replays, what it dead-letters, what it serves first, and that a rules reload never splits a batch.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import itertools
import textwrap

import orjson
import pytest
from aiokafka import ConsumerRecord, TopicPartition
from streams_testing import eventually, rules_under

from routing import parse_rules
from schemas import headers as H
from schemas.errors import ErrorCode
from streams.rules.holder import RulesHolder
from streams.services.batch import BatchService
from streams.services.router import Router
from streams.services.worker import Worker
from streams.topics import TopicLayout
from streams.transport.memory import MemoryBroker, MemoryTransport, RecordRefused
from streams.transport.outbox import Outbox
from streams.transport.protocols import Batch
from streams.transport.settings import KafkaSettings
from workflows import ModelRegistry, sample_items

# Never connected: every byte goes through the in-memory transport. A closed port, so a slip to
# the real transport fails at once instead of finding a broker.
KAFKA = KafkaSettings(bootstrap="127.0.0.1:1", fetch_max_records=1000, backfill_slice=50)
LAYOUT = TopicLayout(prefix="mem.", request_partitions=2, shard_partitions=2, reply_partitions=2)


class Relay(BatchService):
    """Forwards every value to ``out`` (or raises, for the first ``fail`` batches), recording what it saw."""

    role = "test-relay"

    def __init__(self, transport: MemoryTransport, *, topics: list[str], fail: int = 0,
                 kafka: KafkaSettings = KAFKA) -> None:
        super().__init__(kafka, LAYOUT, group_id="relay", topics=topics, transport=transport)
        self.retry_pause_s = 0.0
        self.fail = fail
        self.seen: list[list[bytes | None]] = []

    async def handle(self, batch: Batch, outbox: Outbox) -> None:
        values = [r.value for records in batch.values() for r in records]
        self.seen.append(values)
        for records in batch.values():
            for record in records:
                outbox.put("out", record.value or b"", key=record.key, tag=record)
        if self.fail:
            self.fail -= 1
            raise RuntimeError("handle failed after queueing its output")


def fill(broker: MemoryBroker, topic: str, n: int, prefix: bytes = b"v") -> None:
    broker.create_topic(topic)
    for i in range(n):
        broker.produce(topic, prefix + b"%d" % i)


async def test_offsets_are_committed_only_after_every_output_is_acknowledged():
    broker = MemoryBroker()
    fill(broker, "in", 5)
    broker.hold_acks()
    transport = MemoryTransport(broker)
    async with Relay(transport, topics=["in"]):
        try:  # the batch is handled and its output handed over, unacknowledged
            assert await eventually(lambda: transport.producers and transport.producers[0].sent_batches, timeout=5)
        finally:
            broker.release_acks()  # else stop() waits for acknowledgements for ever
        assert await eventually(lambda: broker.committed("relay") == {TopicPartition("in", 0): 5}, timeout=5)
    assert broker.values("out") == [b"v%d" % i for i in range(5)]
    assert broker.events == ["acked out", "committed relay"]


async def test_one_commit_is_in_flight_at_a_time_and_the_batches_handled_meanwhile_share_the_next():
    broker = MemoryBroker()
    fill(broker, "in", 6)
    broker.commit_delays = [0.2, 0.0, 0.0]  # the first batch's commit takes longest
    async with Relay(MemoryTransport(broker), topics=["in"],
                     kafka=dataclasses.replace(KAFKA, fetch_max_records=2)) as relay:
        assert await eventually(lambda: broker.committed("relay") == {TopicPartition("in", 0): 6}, timeout=5)
    assert relay.batches == 3  # three batches of two ...
    offsets = [o[TopicPartition("in", 0)] for _, o in broker.commit_log]
    assert offsets == [2, 6]  # ... two commits, in order: the two batches handled during the slow one share one


async def test_a_failed_batch_is_rewound_and_replayed_and_its_output_sent_once():
    broker = MemoryBroker()
    fill(broker, "in", 4)
    async with Relay(MemoryTransport(broker), topics=["in"], fail=1) as relay:
        assert await eventually(lambda: broker.committed("relay") == {TopicPartition("in", 0): 4}, timeout=5)
    assert relay.seen[0] == relay.seen[1] == [b"v0", b"v1", b"v2", b"v3"]  # the same batch, replayed
    assert broker.values("out") == [b"v0", b"v1", b"v2", b"v3"]  # the failed attempt's output was discarded
    assert relay.failed is None


async def test_the_next_batch_is_handled_while_the_one_before_waits_for_its_acknowledgements():
    broker = MemoryBroker()
    fill(broker, "in", 4)
    broker.hold_acks()
    async with Relay(MemoryTransport(broker), topics=["in"],
                     kafka=dataclasses.replace(KAFKA, fetch_max_records=2)) as relay:
        try:  # no acknowledgement yet: both batches were handled and sent all the same, and nothing committed
            assert await eventually(lambda: len(relay.seen) == 2, timeout=5)
            assert broker.commit_log == [] and broker.values("out") == []
        finally:
            broker.release_acks()
        assert await eventually(lambda: broker.committed("relay") == {TopicPartition("in", 0): 4}, timeout=5)
    assert relay.seen == [[b"v0", b"v1"], [b"v2", b"v3"]]
    assert broker.values("out") == [b"v0", b"v1", b"v2", b"v3"]  # in order
    assert all(offsets[TopicPartition("in", 0)] in (2, 4) for _, offsets in broker.commit_log)


async def test_a_batch_whose_output_failed_is_replayed_with_every_batch_handled_after_it():
    broker = MemoryBroker()
    fill(broker, "in", 4)
    refusing = [True]  # v0's output and its dead letter: the first batch cannot settle
    broker.refuse(lambda topic, r: RecordRefused("no") if refusing[0] and (
        (topic == "out" and r.value == b"v0") or topic == LAYOUT.deadletter) else None)
    broker.hold_acks()
    async with Relay(MemoryTransport(broker), topics=["in"],
                     kafka=dataclasses.replace(KAFKA, fetch_max_records=2)) as relay:
        try:
            assert await eventually(lambda: len(relay.seen) == 2, timeout=5)  # the second handled meanwhile
        finally:
            broker.release_acks()
        assert await eventually(lambda: len(relay.seen) >= 3, timeout=5)
        committed_while_failing = list(broker.commit_log)
        refusing[0] = False
        assert await eventually(lambda: broker.committed("relay") == {TopicPartition("in", 0): 4}, timeout=5)
    assert relay.seen[2][0] == b"v0"  # replayed from the failed batch's first offset, the later batch with it
    assert committed_while_failing == []  # no commit passed the batch that failed
    letters = [base64.b64decode(orjson.loads(v)["original_b64"]) for v in broker.values(LAYOUT.deadletter)]
    assert {b"v0", b"v1", b"v2", b"v3"} <= set(broker.values("out")) | set(letters)  # nothing lost


async def test_a_commit_lost_in_transit_is_covered_by_the_next_one():
    broker = MemoryBroker()
    fill(broker, "in", 4)
    broker.failing_commits = 1
    async with Relay(MemoryTransport(broker), topics=["in"], kafka=dataclasses.replace(KAFKA, fetch_max_records=2)):
        assert await eventually(lambda: broker.committed("relay") == {TopicPartition("in", 0): 4}, timeout=5)
    assert broker.values("out") == [b"v0", b"v1", b"v2", b"v3"]


async def test_a_refused_output_is_dead_lettered_with_the_original_bytes_and_the_rest_lands():
    broker = MemoryBroker()
    broker.create_topic("in")
    for value in (b"a", b"poison", b"b"):
        broker.produce("in", value, headers=[(H.REQUEST_ID, value)])
    broker.refuse(lambda topic, r: RecordRefused("too large") if topic == "out" and r.value == b"poison" else None)
    async with Relay(MemoryTransport(broker), topics=["in"]) as relay:
        assert await eventually(lambda: broker.committed("relay") == {TopicPartition("in", 0): 3}, timeout=5)
    assert broker.values("out") == [b"a", b"b"]
    [letter] = [orjson.loads(v) for v in broker.values(LAYOUT.deadletter)]
    assert letter["code"] == ErrorCode.OUTPUT_REFUSED and "too large" in letter["message"]
    assert base64.b64decode(letter["original_b64"]) == b"poison" and letter["source_offset"] == 1
    assert letter["original_headers"] == {H.REQUEST_ID: "poison"}
    assert relay.dead_letters == 1


async def test_a_refused_dead_letter_replays_the_batch_instead_of_committing_it():
    broker = MemoryBroker()
    fill(broker, "in", 2)
    refusing = [True]
    broker.refuse(lambda topic, r: RecordRefused("no") if refusing[0] and topic in ("out", LAYOUT.deadletter) else None)
    async with Relay(MemoryTransport(broker), topics=["in"]) as relay:
        assert await eventually(lambda: len(relay.seen) >= 2, timeout=5)  # tried, failed, tried again
        assert broker.commit_log == []
        refusing[0] = False
        assert await eventually(lambda: broker.committed("relay") == {TopicPartition("in", 0): 2}, timeout=5)
    # Nothing lost: each input landed as output, or (if the flip came between the two flushes of a
    # replay) as a dead letter holding its bytes.
    letters = [base64.b64decode(orjson.loads(v)["original_b64"]) for v in broker.values(LAYOUT.deadletter)]
    assert set(broker.values("out")) | set(letters) == {b"v0", b"v1"}


async def test_live_records_come_before_a_backlog_of_backfill_a_slice_at_a_time():
    broker = MemoryBroker()
    fill(broker, "in.backfill", 1000, prefix=b"backfill-")
    fill(broker, "in", 10, prefix=b"live-")
    async with Relay(MemoryTransport(broker), topics=["in", "in.backfill"]) as relay:
        assert await eventually(lambda: sum(map(len, relay.seen)) == 1010, timeout=5)
    live = [v for v in broker.values("in")]
    order = [v for batch in relay.seen for v in batch]
    assert max(order.index(v) for v in live) < 10  # every live record in the first batch
    backfill = set(broker.values("in.backfill"))
    assert all(sum(v in backfill for v in batch) <= 50 for batch in relay.seen)


async def test_a_rules_reload_never_splits_a_batch():
    """The router takes one rules snapshot per batch, however often the rules change meanwhile."""
    rules = rules_under(LAYOUT)
    versions = itertools.count(1)

    def reloading() -> object:  # a new version on every read
        return dataclasses.replace(rules, version=next(versions))

    broker = MemoryBroker(default_partitions=2)
    items = sample_items("title-ranking", 30, seed=3)
    for i, item in enumerate(items):
        request = orjson.dumps({
            "request_id": f"r-{i}", "objective": "title-ranking", "client": "demo",
            "reply_to": LAYOUT.replies("demo"), "context": item.context, "payload": item.payload})
        broker.produce(LAYOUT.requests, request)
    router = Router(KAFKA, LAYOUT, reloading, group_id="router", transport=MemoryTransport(broker))
    async with router:
        assert await eventually(lambda: router.routed == 30, timeout=5)
    work = broker.records(LAYOUT.shard("s1")) + broker.records(LAYOUT.shard("s2"))
    stamped = {dict(r.headers)[H.RULES_VERSION] for r in work}
    assert len(work) == 30 and stamped == {b"1"}


async def test_router_and_worker_answer_every_request_on_the_double():
    """The loop end to end in memory: requests in, one result each on the reply topic, all committed."""
    broker = MemoryBroker(default_partitions=2)
    transport = MemoryTransport(broker)
    rules = RulesHolder(rules_under(LAYOUT))
    registry = ModelRegistry.default()
    items = sample_items("title-ranking", 40, seed=4)
    for i, item in enumerate(items):
        broker.produce(LAYOUT.requests, orjson.dumps({
            "request_id": f"r-{i}", "objective": "title-ranking", "client": "demo",
            "reply_to": LAYOUT.replies("demo"), "context": item.context, "payload": item.payload}))
    broker.produce(LAYOUT.requests, b"{not json")
    services = [Router(KAFKA, LAYOUT, rules, group_id="router", transport=transport),
                *(Worker(KAFKA, LAYOUT, registry, shard=s, group_id=f"worker.{s}", transport=transport)
                  for s in rules().shards)]
    for service in services:
        await service.start()
    try:
        assert await eventually(lambda: len(broker.records(LAYOUT.replies("demo"))) >= 40, timeout=10)
    finally:
        for service in services:
            await service.stop()
    results = [orjson.loads(v) for v in broker.values(LAYOUT.replies("demo"))]
    assert sorted(r["request_id"] for r in results) == sorted(f"r-{i}" for i in range(40))
    assert {r["status"] for r in results} == {"ok"}
    [letter] = [orjson.loads(v) for v in broker.values(LAYOUT.deadletter)]
    assert letter["code"] == ErrorCode.MALFORMED_JSON
    assert sum(broker.committed("router").values()) == 41


async def test_the_double_refuses_a_second_member_of_one_group():
    broker = MemoryBroker()
    fill(broker, "in", 1)
    transport = MemoryTransport(broker)
    async with Relay(transport, topics=["in"]):
        with pytest.raises(RuntimeError, match="one member per group"):
            await Relay(transport, topics=["in"]).start()


async def test_a_model_loads_in_a_thread_so_the_event_loop_goes_on_meanwhile(tmp_path):
    """A slow load (files, imports, an ONNX session) must not stall the other roles of the process."""
    from workflows import InMemoryFactStore
    from workflows.skeleton import new_package

    models = tmp_path / "models"
    package = new_package(models, "slow@v1", "slow")
    (package / "workflow.py").write_text((package / "workflow.py").read_text() + textwrap.dedent("""
        import threading as _threading
        TICKS = {"seen": None}
        _Base = Slow
        class Slow(_Base):
            def load(self, package):
                super().load(package)
                start = TICKS["read"]()
                ready = _threading.Event()
                for _ in range(500):  # up to 5 s: the loop must tick while this load runs
                    if TICKS["read"]() >= start + 3:
                        break
                    ready.wait(0.01)
                TICKS["seen"] = TICKS["read"]() - start
        """))
    rules = dataclasses.replace(parse_rules({
        "shards": {"s1": {}}, "models": {"slow@v1": {"shard": "s1"}},
        "clients": {"demo": {"objectives": ["*"], "reply_topics": [LAYOUT.replies("demo")]}},
        "objectives": {"slow": {"shard_key": "context.user_id", "default": "slow@v1"}}}), version=1)
    registry = ModelRegistry(models, InMemoryFactStore())
    broker = MemoryBroker(default_partitions=2)
    transport = MemoryTransport(broker)
    ticks = 0
    loop = asyncio.get_running_loop()

    def tick() -> None:  # runs only while the event loop is free to run callbacks
        nonlocal ticks, pending
        ticks += 1
        pending = loop.call_later(0.005, tick)

    pending = loop.call_soon(tick)

    module = _module_of(registry, "slow@v1")
    module.TICKS["read"] = lambda: ticks
    broker.produce(LAYOUT.requests, orjson.dumps({"request_id": "r-1", "objective": "slow", "client": "demo",
                                                  "reply_to": LAYOUT.replies("demo"), "context": {"user_id": "u-1"},
                                                  "payload": {"x": 1}}))
    services = [Router(KAFKA, LAYOUT, lambda: rules, group_id="router", transport=transport),
                Worker(KAFKA, LAYOUT, registry, shard="s1", group_id="worker.s1", transport=transport)]
    try:
        for service in services:
            await service.start()
        assert await eventually(lambda: broker.records(LAYOUT.replies("demo")), timeout=10)
    finally:
        pending.cancel()
        for service in services:
            await service.stop()
    [result] = [orjson.loads(v) for v in broker.values(LAYOUT.replies("demo"))]
    assert result["status"] == "ok"
    assert module.TICKS["seen"] >= 3  # the loop went on while the model loaded


def _module_of(registry, model_id):
    """The package's own module, imported the way the worker will import it (and cached under its name)."""
    from workflows.loading import _package_module, package_sha256

    directory = registry.directory(model_id)
    return _package_module(directory, "workflow", model_id, package_sha256(directory))


class Holding(Relay):
    """Holds back the record at ``hold`` (its output comes later, as a worker's does for a loading model)."""

    def __init__(self, transport: MemoryTransport, *, hold: int, **kwargs) -> None:
        super().__init__(transport, **kwargs)
        self.hold, self.release = hold, asyncio.Event()
        self.waiting: dict[TopicPartition, ConsumerRecord] = {}

    def held(self) -> dict[TopicPartition, int]:
        return {tp: r.offset for tp, r in self.waiting.items()}

    async def handle(self, batch: Batch, outbox: Outbox) -> None:
        for tp, records in batch.items():
            for record in records:
                if record.offset == self.hold:
                    self.waiting[tp] = record
                else:
                    outbox.put("out", record.value or b"", tag=record)
        if self.release.is_set():
            for record in self.waiting.values():
                outbox.put("out", record.value or b"", tag=record)
            self.waiting.clear()


async def test_commits_stop_short_of_held_back_work_and_move_on_once_it_is_done():
    broker = MemoryBroker()
    fill(broker, "in", 6)
    tp = TopicPartition("in", 0)
    async with Holding(MemoryTransport(broker), topics=["in"], hold=2,
                       kafka=dataclasses.replace(KAFKA, fetch_max_records=3)) as service:
        # Every record but the held one is answered; the commit stops at the held record.
        assert await eventually(lambda: len(broker.values("out")) == 5, timeout=5)
        assert await eventually(lambda: broker.committed("relay") == {tp: 2}, timeout=5)
        service.release.set()  # no new batch comes: an empty poll must still let the held work out
        assert await eventually(lambda: broker.committed("relay") == {tp: 6}, timeout=5)
    assert sorted(broker.values("out")) == [b"v%d" % i for i in range(6)]
    assert [o[tp] for _, o in broker.commit_log] == [2, 2, 6]  # the batches (0-2, 3-5), then the release
    assert service.batches == 2  # the empty polls that looked at the held work are not batches


async def test_held_back_work_not_done_before_stop_is_replayed_by_the_next_member():
    broker = MemoryBroker()
    fill(broker, "in", 4)
    async with Holding(MemoryTransport(broker), topics=["in"], hold=1):
        assert await eventually(lambda: len(broker.values("out")) == 3, timeout=5)
    assert broker.committed("relay") == {TopicPartition("in", 0): 1}
    async with Relay(MemoryTransport(broker), topics=["in"]):
        assert await eventually(lambda: broker.committed("relay") == {TopicPartition("in", 0): 4}, timeout=5)
    assert sorted(set(broker.values("out"))) == [b"v%d" % i for i in range(4)]  # v1 answered; v2, v3 again


async def test_work_in_flight_counts_records_taken_and_not_committed():
    """What an autoscaler reads beside the lag: records in hand, from the take until their commit."""
    broker = MemoryBroker()
    fill(broker, "in", 5)
    broker.hold_acks()
    transport = MemoryTransport(broker)
    relay = Relay(transport, topics=["in"])
    async with relay:
        try:
            assert await eventually(lambda: relay.in_flight() == 5, timeout=5)
        finally:
            broker.release_acks()
        assert await eventually(lambda: broker.committed("relay") == {TopicPartition("in", 0): 5}, timeout=5)
        assert relay.in_flight() == 0
        fill(broker, "in", 3, prefix=b"w")
        assert await eventually(lambda: broker.committed("relay") == {TopicPartition("in", 0): 8}, timeout=5)
        assert relay.in_flight() == 0
