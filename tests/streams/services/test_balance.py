"""Keyless requests go to the less loaded of two partitions (pure, and the router on the in-memory double).

The same behaviour against a real broker, with a partition whose worker is five times slower,
is ``test_keyless_balance.py``.
"""

from __future__ import annotations

import random
from collections import Counter

import orjson
from aiokafka import TopicPartition
from streams_testing import eventually, rules_under

from streams.services.balance import LagPoller, PartitionLoad
from streams.services.router import Router
from streams.topics import TopicLayout
from streams.transport.memory import MemoryBroker, MemoryTransport
from streams.transport.settings import KafkaSettings

KAFKA = KafkaSettings(bootstrap="127.0.0.1:1")  # never connected: the double carries every byte
LAYOUT = TopicLayout(prefix="mem.", request_partitions=1, shard_partitions=4, reply_partitions=1)


def test_two_draws_are_always_two_distinct_partitions():
    load = PartitionLoad(random.Random(1))
    load.learn("t", {0: 10**6}, 2)  # partition 0 is hopeless: any pair that holds 1 takes 1
    assert {load.pick("t", 2) for _ in range(200)} == {1}


def test_the_less_loaded_partition_of_the_pair_is_taken():
    load = PartitionLoad(random.Random(2))
    load.learn("t", {0: 500, 1: 0, 2: 0, 3: 0}, 4)
    picks = Counter(load.pick("t", 4) for _ in range(300))
    # 300 picks spread over 1..3 leave each below 500 sent: partition 0 never wins a draw.
    assert picks[0] == 0
    assert min(picks[p] for p in (1, 2, 3)) > 60


def test_without_a_reading_the_router_own_sends_spread_requests_evenly():
    load = PartitionLoad(random.Random(3))
    picks = Counter(load.pick("t", 4) for _ in range(4000))
    assert max(picks.values()) - min(picks.values()) <= 40, picks  # random choice alone would be ~ +-100


def test_keyed_sends_count_towards_a_partition_load_until_the_next_reading():
    load = PartitionLoad()
    load.learn("t", {0: 3}, 2)
    for _ in range(5):
        load.sent("t", 1)
    assert (load.load("t", 0), load.load("t", 1)) == (3, 5)
    load.learn("t", {0: 0, 1: 2}, 2)  # a reading already counts what was sent before it
    assert (load.load("t", 0), load.load("t", 1)) == (0, 2)


def test_a_partition_count_that_grew_starts_every_partition_idle():
    load = PartitionLoad(random.Random(4))
    load.learn("t", {0: 9, 1: 9}, 2)
    assert load.pick("t", 3) in (0, 1, 2) and load.load("t", 2) <= 1


async def test_the_poller_reads_each_group_lag_and_keeps_the_last_reading_when_one_fails():
    broker = MemoryBroker()
    broker.create_topic("work", 2)
    for _ in range(7):
        broker.produce("work", b"x", partition=1)
    broker._commit("workers", {TopicPartition("work", 1): 4})
    load = PartitionLoad()
    reader = MemoryTransport(broker).lag_reader("router")
    poller = LagPoller(reader, load, lambda: [("workers", "work", 2)])
    await poller.read_once()
    assert (load.load("work", 0), load.load("work", 1)) == (0, 3)

    def broken():
        raise RuntimeError("no broker")

    poller.targets = broken
    await poller.start()
    try:
        assert await eventually(lambda: poller._failing, timeout=5)
    finally:
        await poller.stop()
    assert load.load("work", 1) == 3


def _keyless(i: int) -> bytes:
    return orjson.dumps({"request_id": f"r-{i}", "objective": "fraud-score", "client": "demo",
                         "reply_to": LAYOUT.replies("demo"), "context": {"country": "US"},
                         "payload": {"amount": 10.0 + i, "merchant": "m-1"}})


async def test_the_router_sends_keyless_requests_away_from_a_partition_with_work_waiting():
    rules = rules_under(LAYOUT)
    shard = rules.models["fraud-score@v1"]
    work = LAYOUT.shard(shard)
    broker = MemoryBroker()
    broker.create_topic(work, 4)
    for _ in range(200):  # a backlog its workers have not committed: their lag on partition 0
        broker.produce(work, b"queued", partition=0)
    router = Router(KAFKA, LAYOUT, lambda: rules, group_id="router", transport=MemoryTransport(broker))
    async with router:
        broker.produce(LAYOUT.requests, _keyless(0))
        assert await eventually(lambda: router.routed == 1, timeout=5)  # the first batch learns the counts
        assert router._lag is not None
        await router._lag.read_once()
        for i in range(1, 101):
            broker.produce(LAYOUT.requests, _keyless(i))
        assert await eventually(lambda: router.routed == 101, timeout=5)
    landed = Counter(r.partition for r in broker.records(work) if r.value != b"queued")
    assert sum(landed.values()) == 101
    assert landed[0] <= 1, landed  # only the very first, routed before any reading, may have gone there
