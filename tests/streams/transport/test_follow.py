"""Replay, then follow: the one reader of compacted topics, on the in-memory transport.

Its Kafka behaviour (offsets after compaction, read-committed ends, a topic created later) is
checked against the real broker by the tests of the packages that use it (rules, facts,
repository, rollouts).
"""

from __future__ import annotations

import pytest
from aiokafka import TopicPartition

from streams.transport.follow import Follower, read_to_end
from streams.transport.memory import MemoryBroker, MemoryTransport

T0, T1 = TopicPartition("state", 0), TopicPartition("state", 1)


def broker_with(n: int = 5) -> MemoryBroker:
    broker = MemoryBroker()
    broker.create_topic("state", 2)
    for i in range(n):
        broker.produce("state", b"v%d" % i, key=b"k%d" % (i % 2), partition=0)
    return broker


async def test_a_new_partition_is_replayed_to_the_end_it_had_then_followed():
    broker = broker_with()
    async with Follower(MemoryTransport(broker).reader("t")) as follower:
        await follower.follow([T0])
        assert not follower.caught_up
        batch = await follower.poll()
        assert [r.value for r in batch[T0]] == [b"v0", b"v1", b"v2", b"v3", b"v4"]
        assert follower.caught_up
        broker.produce("state", b"later", key=b"k9", partition=0)
        assert [r.value for r in (await follower.poll(timeout_ms=1000))[T0]] == [b"later"]


async def test_replay_after_compaction_skips_the_gaps_and_keeps_offsets():
    broker = broker_with()
    assert broker.compact("state") == 3  # k0 -> v4, k1 -> v3 stay
    records = await read_to_end(await _started(MemoryTransport(broker)), [T0], timeout=5)
    assert [(r.offset, r.value) for r in records] == [(3, b"v3"), (4, b"v4")]


async def test_an_empty_partition_is_caught_up_at_once():
    async with Follower(MemoryTransport(broker_with()).reader("t")) as follower:
        await follower.follow([T1])
        assert follower.caught_up


async def test_kept_partitions_go_on_from_where_they_were_and_new_ones_replay():
    broker = broker_with()
    async with Follower(MemoryTransport(broker).reader("t")) as follower:
        await follower.follow([T0])
        await follower.poll()
        broker.produce("state", b"one", key=b"a", partition=1)
        dropped = await follower.follow([T0, T1])
        assert dropped == set() and not follower.caught_up
        batch = await follower.poll()
        assert T0 not in batch and [r.value for r in batch[T1]] == [b"one"]  # T0 did not start over
        assert await follower.follow([T1]) == {T0}


async def test_start_at_resumes_a_partition_where_a_reader_left_it():
    broker = broker_with()
    records = await read_to_end(await _started(MemoryTransport(broker)), [T0], timeout=5, start_at={T0: 3})
    assert [r.value for r in records] == [b"v3", b"v4"]


async def test_reading_to_an_end_that_never_comes_times_out():
    broker = broker_with()

    class Stuck:
        """A reader whose fetches never return anything."""

        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        async def getmany(self, *partitions, timeout_ms=0, max_records=None):
            return {}

    with pytest.raises(TimeoutError, match="to the end"):
        await read_to_end(Stuck(await _started(MemoryTransport(broker))), [T0], timeout=0.3)


async def _started(transport: MemoryTransport):
    reader = transport.reader("t")
    await reader.start()
    return reader
