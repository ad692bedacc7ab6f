"""Reading a topic once to its end (reports, exports) and tailing topics (the demo, tests), on the in-memory transport.

Kafka's part (read-committed ends, a topic created a moment ago, offsets after compaction) is
checked on the broker by the tests of their users: ``shadow report``/``export``, ``scoreline send``,
the backfill CLI.
"""

from __future__ import annotations

import pytest

from streams.transport.memory import MemoryBroker, MemoryTransport
from streams.transport.settings import KafkaSettings
from streams.transport.tail import TopicTail
from streams.transport.topic_reader import TopicSpan, read_topic

KAFKA = KafkaSettings(bootstrap="127.0.0.1:1")  # never connected


def topic_with(n: int) -> MemoryBroker:
    broker = MemoryBroker()
    broker.create_topic("t", 2)
    for i in range(n):
        broker.produce("t", b"v%d" % i, partition=i % 2, timestamp_ms=1_000 * (i + 1))
    return broker


async def test_a_topic_is_read_from_its_beginning_or_a_time_or_offsets_up_to_its_end_as_of_the_start():
    broker = topic_with(6)
    transport = MemoryTransport(broker)
    whole = await read_topic(KAFKA, "t", transport=transport, timeout=2)
    assert sorted(r.value for r in whole) == [b"v%d" % i for i in range(6)]
    since = await read_topic(KAFKA, "t", since_ms=4_000, transport=transport, timeout=2)
    assert sorted(r.value for r in since) == [b"v3", b"v4", b"v5"]
    resumed = await read_topic(KAFKA, "t", from_offsets={0: 2}, transport=transport, timeout=2)  # partition 0: v0 v2 v4
    assert sorted(r.value for r in resumed) == [b"v1", b"v3", b"v4", b"v5"]
    async with TopicSpan(KAFKA, "t", transport=transport, timeout=2) as span:
        broker.produce("t", b"later", partition=0)  # after the start: past the span's end
        read = [r.value async for batch in span for r in batch]
    assert (span.start_offsets, span.end_offsets, span.total) == ({0: 0, 1: 0}, {0: 3, 1: 3}, 6)
    assert b"later" not in read and len(read) == 6


async def test_reading_a_topic_that_does_not_exist_says_so():
    with pytest.raises(LookupError, match="topic nowhere does not exist"):
        await read_topic(KAFKA, "nowhere", transport=MemoryTransport(MemoryBroker()), timeout=2)


async def test_a_tail_collects_what_arrives_after_its_start_or_everything_from_the_beginning():
    broker = topic_with(4)
    transport = MemoryTransport(broker)
    async with TopicTail(KAFKA, ["t"], transport=transport) as tail, \
            TopicTail(KAFKA, ["t"], from_beginning=True, transport=transport) as whole:
        broker.produce("t", b"new", partition=1)
        assert await tail.wait_for(lambda: len(tail.records) >= 1, timeout=2)
        assert await whole.wait_for(lambda: len(whole.records) >= 5, timeout=2)
    assert [r.value for r in tail.records] == [b"new"]
    assert sorted(r.value for r in whole.records) == [b"new", b"v0", b"v1", b"v2", b"v3"]
