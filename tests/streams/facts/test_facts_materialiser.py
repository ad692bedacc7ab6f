"""A worker's facts from the fact topics, on the in-memory transport: what it holds as partitions come and go.

The Kafka behaviour it relies on (co-partitioning with the work topics, a real broker's
offsets) stays on the real broker in ``test_facts_topic.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from streams_testing import eventually

from routing import partition_for
from streams.facts.topic import FactTopicMaterialiser, publish_facts
from streams.topics import TopicLayout
from streams.transport.memory import MemoryBroker, MemoryTransport
from streams.transport.settings import KafkaSettings
from workflows import InMemoryFactStore, default_facts_dir

KAFKA = KafkaSettings(bootstrap="127.0.0.1:1")  # never connected
LAYOUT = TopicLayout(prefix="mem.", shard_partitions=4)
USER_FACTS = ("user_embedding", "user_profile", "user_txn_history")


@pytest.fixture(scope="module")
def files() -> InMemoryFactStore:
    return InMemoryFactStore.from_dir(default_facts_dir())


def users_on(files: InMemoryFactStore, partitions: set[int]) -> set[str]:
    return {u for u in files.keys("user_embedding") if partition_for(u, LAYOUT.shard_partitions) in partitions}


async def test_a_worker_owning_some_partitions_holds_exactly_its_users(files):
    transport = MemoryTransport(MemoryBroker())
    await publish_facts(KAFKA, LAYOUT, files, transport=transport)
    async with FactTopicMaterialiser(KAFKA, LAYOUT, ["title_availability", *USER_FACTS],
                                     transport=transport) as facts:
        await facts.follow({0})
        assert facts.ready
        for fact in USER_FACTS:
            assert set(facts.store.keys(fact)) == users_on(files, {0})
        assert set(facts.store.keys("title_availability")) == set(files.keys("title_availability"))  # global
        mine = sorted(users_on(files, {0}))[:50]
        for fact in USER_FACTS:
            np.testing.assert_array_equal(facts.store.lookup(fact, mine).values, files.lookup(fact, mine).values)

        # A rebalance moves partition 0 away and brings 1: its users come, partition 0's go.
        await facts.follow({1})
        for fact in USER_FACTS:
            assert set(facts.store.keys(fact)) == users_on(files, {1})
        assert set(facts.store.keys("title_availability")) == set(files.keys("title_availability"))
        before = facts.store.missing_counts()["user_embedding"]
        batch = facts.store.lookup("user_embedding", mine[:3])  # held elsewhere: the default, counted
        assert not batch.found.any() and not batch.values.any()
        assert facts.store.missing_counts()["user_embedding"] == before + 3


async def test_later_publishes_and_tombstones_are_followed():
    broker = MemoryBroker()
    transport = MemoryTransport(broker)
    small = InMemoryFactStore()
    small.define("user_embedding", [f"d{i}" for i in range(16)], np.zeros(16), key="user_id")
    small.put("user_embedding", ["u-1", "u-2"], np.ones((2, 16)))
    await publish_facts(KAFKA, LAYOUT, small, transport=transport)
    async with FactTopicMaterialiser(KAFKA, LAYOUT, ["user_embedding"], transport=transport) as facts:
        await facts.follow(range(LAYOUT.shard_partitions))
        assert set(facts.store.keys("user_embedding")) == {"u-1", "u-2"}
        small.put("user_embedding", ["u-1"], np.full((1, 16), 0.1))
        await publish_facts(KAFKA, LAYOUT, small, transport=transport)
        broker.produce(LAYOUT.facts("user_embedding"), None, key=b"u-2",
                       partition=partition_for("u-2", LAYOUT.shard_partitions))
        assert await eventually(lambda: set(facts.store.keys("user_embedding")) == {"u-1"}
                                and facts.store.lookup("user_embedding", ["u-1"]).values[0, 0] == 0.1, timeout=10)


async def test_a_compacted_fact_topic_gives_a_new_worker_the_same_rows(files):
    broker = MemoryBroker()
    transport = MemoryTransport(broker)
    await publish_facts(KAFKA, LAYOUT, files, ["user_profile"], transport=transport)
    await publish_facts(KAFKA, LAYOUT, files, ["user_profile"], transport=transport)  # every row twice
    assert broker.compact(LAYOUT.facts("user_profile")) > 0  # the cleaner keeps one per key, spec included
    async with FactTopicMaterialiser(KAFKA, LAYOUT, ["user_profile"], transport=transport) as facts:
        await facts.follow(range(LAYOUT.shard_partitions))
        assert set(facts.store.keys("user_profile")) == set(files.keys("user_profile"))
        keys = sorted(files.keys("user_profile"))[:20]
        np.testing.assert_allclose(facts.store.lookup("user_profile", keys).values,
                                   files.lookup("user_profile", keys).values, rtol=1e-6)
        assert facts.skipped == 0


async def test_a_fact_topic_not_published_yet_leaves_its_models_unavailable_and_says_so(caplog):
    async with FactTopicMaterialiser(KAFKA, LAYOUT, ["user_profile"], transport=MemoryTransport(MemoryBroker())) as f:
        await f.follow({0})
        assert f.ready and f.stats()["assigned"] == []
    assert "fact topic mem.facts.user_profile does not exist" in caplog.text
