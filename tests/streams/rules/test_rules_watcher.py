"""Following the rules topic, on the in-memory transport: which version the watcher puts in force, and when.

What is Kafka's (transactions of the publisher, read-committed ends, a broker that cannot be
reached) stays on the real broker in ``test_rules_topic.py``.
"""

from __future__ import annotations

import pytest
from streams_testing import rules_under

from routing import rules_to_doc
from streams.rules.holder import RulesHolder
from streams.rules.log import LATEST_KEY, RulesRecord, encode_record, read_log, version_key
from streams.rules.watcher import RulesWatcher
from streams.topics import TopicLayout
from streams.transport.memory import MemoryBroker, MemoryTransport
from streams.transport.settings import KafkaSettings

KAFKA = KafkaSettings(bootstrap="127.0.0.1:1")  # never connected
LAYOUT = TopicLayout(prefix="mem.")


@pytest.fixture
def rules():
    return rules_under(LAYOUT)


def publish(broker: MemoryBroker, rules, version: int, *, canary: float = 0.0, value: bytes | None = None) -> None:
    """What RulesPublisher writes for ``version``: the per-version record, then the latest."""
    doc = rules_to_doc(rules)
    doc["objectives"]["title-ranking"]["canary"]["percent"] = canary
    body = value if value is not None else encode_record(RulesRecord(version, 1_700_000_000_000 + version, "t", doc))
    broker.produce(LAYOUT.rules, body, key=version_key(version).encode(), partition=0)
    broker.produce(LAYOUT.rules, body, key=LATEST_KEY.encode(), partition=0)


def rules_topic() -> MemoryBroker:
    broker = MemoryBroker()
    broker.create_topic(LAYOUT.rules)
    return broker


async def test_an_empty_topic_leaves_the_fallback_in_force(rules):
    holder = RulesHolder(rules)
    async with RulesWatcher(KAFKA, LAYOUT, holder, transport=MemoryTransport(rules_topic())) as watcher:
        assert watcher.caught_up and watcher.topic_version is None
        assert holder() is rules


async def test_catching_up_puts_only_the_newest_valid_version_in_force(rules):
    broker = rules_topic()
    for version in (1, 2, 3):
        publish(broker, rules, version, canary=version)
    publish(broker, rules, 4, value=b"not json")  # a writer that skipped validation: readers skip it
    holder = RulesHolder(rules)
    async with RulesWatcher(KAFKA, LAYOUT, holder, transport=MemoryTransport(broker)) as watcher:
        assert watcher.caught_up and watcher.topic_version == 3
        assert holder().objectives["title-ranking"].canary.percent == 3
        assert watcher.skipped == 1


async def test_a_later_version_is_put_in_force_and_an_older_one_is_skipped(rules):
    broker = rules_topic()
    publish(broker, rules, 2)
    holder = RulesHolder(rules)
    async with RulesWatcher(KAFKA, LAYOUT, holder, transport=MemoryTransport(broker)) as watcher:
        publish(broker, rules, 1, canary=50)  # a late write of an older version (a deposed publisher)
        publish(broker, rules, 5, canary=25)
        assert await watcher.wait_for_version(5, timeout=5)
        assert holder().objectives["title-ranking"].canary.percent == 25
        assert watcher.skipped == 1


async def test_a_compacted_topic_still_gives_the_latest_and_every_kept_version(rules):
    broker = rules_topic()
    for version in (1, 2, 3):
        publish(broker, rules, version, canary=version)
    broker.compact(LAYOUT.rules)  # the three older "rules" records go; every rules.v<N> stays
    log = await read_log(KAFKA, LAYOUT.rules, timeout=5, transport=MemoryTransport(broker))
    assert log.latest is not None and log.latest.version == 3 and log.highest == 3
    assert [r.version for r in log.history()] == [1, 2, 3]
    holder = RulesHolder(rules)
    async with RulesWatcher(KAFKA, LAYOUT, holder, transport=MemoryTransport(broker)) as watcher:
        assert watcher.topic_version == 3 and watcher.skipped == 0


async def test_reading_a_topic_that_does_not_exist_reads_nothing():
    log = await read_log(KAFKA, LAYOUT.rules, timeout=5, transport=MemoryTransport(MemoryBroker()))
    assert log.latest is None and log.highest == 0 and log.versions == {}
