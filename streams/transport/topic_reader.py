"""Reading a whole topic once: from a time (or the beginning) up to its end as of the call.

Reports use it (``scoreline shadow report``): no consumer group, no commits,
every partition assigned by hand, and a stopping point fixed before reading
so that a busy topic still gives a finite answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from aiokafka import ConsumerRecord, TopicPartition

from streams.transport.settings import KafkaSettings

__all__ = ["read_topic"]


async def read_topic(kafka: KafkaSettings, topic: str, *, since_ms: int | None = None,
                     from_offsets: Mapping[int, int] | None = None, timeout: float = 60.0) -> list[ConsumerRecord]:
    """Every record of ``topic`` from ``since_ms`` (epoch ms; None: the beginning) to its current end.

    ``from_offsets`` (partition -> offset) starts those partitions there instead: a reader that
    keeps up with a topic reads only what came since it last read.

    Raises:
        LookupError: the topic does not exist.
        TimeoutError: the end was not reached within ``timeout`` seconds.
    """
    consumer = kafka.consumer(group_id=None, role="report", fetch_max_wait_ms=50,
                              isolation_level="read_committed")
    await consumer.start()
    try:
        partitions = None
        for _ in range(20):  # fresh metadata may not list a topic created a moment ago
            partitions = consumer.partitions_for_topic(topic)
            if partitions:
                break
            await consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka has no public refresh
            await asyncio.sleep(0.1)
        if not partitions:
            raise LookupError(f"topic {topic} does not exist")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        end = await consumer.end_offsets(tps)
        if since_ms is None:
            await consumer.seek_to_beginning(*tps)
            start = await consumer.beginning_offsets(tps) if from_offsets else {}
            for tp in tps:
                if from_offsets and tp.partition in from_offsets:
                    consumer.seek(tp, max(from_offsets[tp.partition], start[tp]))
        else:
            found = await consumer.offsets_for_times({tp: since_ms for tp in tps})
            for tp in tps:
                # No record at or after the time: nothing to read in that partition.
                consumer.seek(tp, found[tp].offset if found[tp] is not None else end[tp])
        records: list[ConsumerRecord] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pending = {tp for tp in tps if await consumer.position(tp) < end[tp]}
        while pending:
            if loop.time() > deadline:
                raise TimeoutError(f"reading {topic}: end not reached within {timeout}s")
            batch = await consumer.getmany(*pending, timeout_ms=200)
            for tp, part in batch.items():
                records.extend(r for r in part if r.offset < end[tp])
            pending = {tp for tp in pending if await consumer.position(tp) < end[tp]}
        return records
    finally:
        await consumer.stop()
