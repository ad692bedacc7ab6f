"""Publishing rules versions, on the in-memory transport: numbering, history, rollback, compare-and-set, fencing.

Kafka's part (transactions fencing racing publishers on a real broker, read-committed readers,
a hot reload under traffic) stays in ``test_rules_topic.py``.
"""

from __future__ import annotations

import pytest
from streams_testing import rules_under

from routing import RulesError, rules_to_doc
from streams.rules.log import LATEST_KEY, version_key
from streams.rules.publisher import RulesConflict, RulesPublisher
from streams.topics import TopicLayout
from streams.transport.memory import MemoryBroker, MemoryTransport
from streams.transport.settings import KafkaSettings

KAFKA = KafkaSettings(bootstrap="127.0.0.1:1")  # never connected
LAYOUT = TopicLayout(prefix="mem.")


@pytest.fixture
def rules():
    return rules_under(LAYOUT)


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker()


def publisher(broker: MemoryBroker, by: str = "test") -> RulesPublisher:
    return RulesPublisher(KAFKA, LAYOUT, published_by=by, timeout=2.0, transport=MemoryTransport(broker))


def with_canary(rules, percent: float) -> dict:
    doc = rules_to_doc(rules)
    doc["objectives"]["title-ranking"]["canary"]["percent"] = percent
    return doc


async def test_publish_keeps_every_version_and_rollback_republishes(broker, rules):
    publish = publisher(broker)
    first, second = with_canary(rules, 0), with_canary(rules, 50)

    assert (await publish.publish(first)).version == 1
    published = await publish.publish_version(second)
    assert (published.rules.version, published.previous_version) == (2, 1)
    assert published.rules.objectives["title-ranking"].canary.percent == 50

    history = await publish.history()
    assert [r.version for r in history] == [1, 2]
    assert [r.published_by for r in history] == ["test", "test"]
    assert (await publish.get(1)).doc == first | {"version": 1}
    assert (await publish.latest()).version == 2

    rolled = await publish.rollback(1)
    assert rolled.version == 3
    assert rolled.objectives == (await publish.get(1)).rules().objectives
    assert (await publish.latest()).doc == first | {"version": 3}
    assert [r.version for r in await publish.history()] == [1, 2, 3]
    # Each publish is the per-version record, then the latest, on partition 0.
    assert [r.key for r in broker.records(LAYOUT.rules)] == [
        k.encode() for v in (1, 2, 3) for k in (version_key(v), LATEST_KEY)]


async def test_an_invalid_document_is_refused_and_nothing_is_written(broker, rules):
    bad = with_canary(rules, 0)
    bad["objectives"]["title-ranking"]["default"] = "no-such@v9"
    with pytest.raises(RulesError) as refused:
        await publisher(broker).publish(bad)
    assert "objectives.title-ranking.default: unknown model 'no-such@v9'" in refused.value.problems
    assert broker.records(LAYOUT.rules) == []


async def test_a_publish_based_on_a_version_that_is_no_longer_the_latest_is_refused(broker, rules):
    """Compare-and-set: ``if_version`` is the version the document was made from; another publish since refuses it."""
    publish = publisher(broker)
    with pytest.raises(RulesConflict, match="version 0 is the latest"):
        await publish.publish_version(with_canary(rules, 10), if_version=3)  # nothing published: 0 is latest
    assert (await publish.publish_version(with_canary(rules, 10), if_version=0)).record.version == 1
    assert (await publish.publish_version(with_canary(rules, 20), if_version=1)).record.version == 2
    with pytest.raises(RulesConflict) as refused:  # made from version 1, but 2 landed since
        await publish.publish_version(with_canary(rules, 30), if_version=1)
    assert refused.value.code == "rules_conflict" and "version 2 is the latest" in str(refused.value)
    latest = await publish.latest()
    assert latest.version == 2 and latest.rules().objectives["title-ranking"].canary.percent == 20  # not overwritten


async def test_a_publisher_fenced_between_its_read_and_its_commit_writes_nothing(broker, rules, monkeypatch):
    """A second publisher starting while the first is between reading the highest version and committing fences it:
    the first fails with ``rules_conflict`` and none of its records lands; the second publishes the next version."""
    first, second = publisher(broker, "first"), publisher(broker, "second")
    await first.publish(with_canary(rules, 0))
    read = RulesPublisher.read
    fenced_once = False

    async def read_then_fenced(self):
        nonlocal fenced_once
        log = await read(self)
        if self is first and not fenced_once:
            fenced_once = True
            assert (await second.publish_version(with_canary(rules, 20))).record.version == 2
        return log

    monkeypatch.setattr(RulesPublisher, "read", read_then_fenced)
    with pytest.raises(RulesConflict, match="another publisher"):
        await first.publish_version(with_canary(rules, 10))
    monkeypatch.undo()
    history = await first.history()
    assert [(r.version, r.published_by) for r in history] == [(1, "first"), (2, "second")]
    assert (await first.latest()).rules().objectives["title-ranking"].canary.percent == 20
    assert (await first.publish_version(with_canary(rules, 30))).record.version == 3  # it may simply try again
