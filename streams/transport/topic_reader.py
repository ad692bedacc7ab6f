"""Reading a whole topic once: from a time (or the beginning) up to its end as of the call.

Reports and exports use it (``scoreline shadow report``, ``shadow export``): no consumer group, no commits,
every partition assigned by hand, and a stopping point fixed before reading
so that a busy topic still gives a finite answer. It reads with the transport's group-less
:class:`~streams.transport.protocols.Reader` (read committed).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

from streams.transport.kafka import KafkaTransport
from streams.transport.protocols import Reader, Record, TopicPartition, Transport
from streams.transport.settings import KafkaSettings

__all__ = ["TopicSpan", "read_topic"]


async def read_topic(kafka: KafkaSettings, topic: str, *, since_ms: int | None = None,
                     from_offsets: Mapping[int, int] | None = None, timeout: float = 60.0,
                     transport: Transport | None = None) -> list[Record]:
    """Every record of ``topic`` from ``since_ms`` (epoch ms; None: the beginning) to its current end.

    ``from_offsets`` (partition -> offset) starts those partitions there instead: a reader that
    keeps up with a topic reads only what came since it last read.

    Raises:
        LookupError: the topic does not exist.
        TimeoutError: the end was not reached within ``timeout`` seconds.
    """
    records: list[Record] = []
    async with TopicSpan(kafka, topic, since_ms=since_ms, from_offsets=from_offsets, timeout=timeout,
                         transport=transport) as span:
        async for batch in span:
            records.extend(batch)
    return records


class TopicSpan:
    """The records of a topic from a start (offsets, a time, or the beginning) to its end as of
    :meth:`start`, read in batches: ``async with TopicSpan(...) as span: async for batch in span``.

    After the start, ``span.start_offsets`` and ``span.end_offsets`` (partition -> offset) say what
    it covers and ``span.total`` how many records that is (fewer where compaction or transaction
    markers left gaps), so a long read can show its progress and a reader can resume at the end.
    """

    def __init__(self, kafka: KafkaSettings, topic: str, *, since_ms: int | None = None,
                 from_offsets: Mapping[int, int] | None = None, timeout: float = 60.0,
                 max_records: int = 10_000, transport: Transport | None = None) -> None:
        self.kafka = kafka
        self.transport = transport if transport is not None else KafkaTransport(kafka)
        self.topic = topic
        self.since_ms = since_ms
        self.from_offsets = from_offsets
        self.timeout = timeout
        self.max_records = max_records
        self.start_offsets: dict[int, int] = {}
        self.end_offsets: dict[int, int] = {}
        self._consumer: Reader | None = None
        self._tps: list[TopicPartition] = []

    @property
    def total(self) -> int:
        return sum(max(0, self.end_offsets[p] - self.start_offsets.get(p, 0)) for p in self.end_offsets)

    async def __aenter__(self) -> TopicSpan:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        consumer = self.transport.reader("report", read_committed=True, max_records=self.max_records)
        await consumer.start()
        self._consumer = consumer
        partitions: set[int] = set()
        for _ in range(20):  # a topic created a moment ago may not be in the metadata yet
            partitions = (await consumer.partitions(self.topic)).get(self.topic, set())
            if partitions:
                break
            await asyncio.sleep(0.1)
        if not partitions:
            raise LookupError(f"topic {self.topic} does not exist")
        tps = self._tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        end = await consumer.end_offsets(tps)
        if self.since_ms is None:
            await consumer.seek_to_beginning(*tps)
            for tp in tps:
                if self.from_offsets and tp.partition in self.from_offsets:
                    first = await consumer.position(tp)  # the first record still in the log
                    consumer.seek(tp, max(self.from_offsets[tp.partition], first))
        else:
            found = await consumer.offsets_for_times({tp: self.since_ms for tp in tps})
            for tp in tps:
                # No record at or after the time: nothing to read in that partition.
                consumer.seek(tp, found[tp].offset if found[tp] is not None else end[tp])
        self.end_offsets = {tp.partition: end[tp] for tp in tps}
        self.start_offsets = {tp.partition: min(await consumer.position(tp), end[tp]) for tp in tps}

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def __aiter__(self) -> AsyncIterator[list[Record]]:
        consumer = self._consumer
        assert consumer is not None, "start() first"
        end = {tp: self.end_offsets[tp.partition] for tp in self._tps}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        pending = {tp for tp in self._tps if await consumer.position(tp) < end[tp]}
        while pending:
            if loop.time() > deadline:
                raise TimeoutError(f"reading {self.topic}: end not reached within {self.timeout}s")
            batch = await consumer.getmany(*pending, timeout_ms=200, max_records=self.max_records)
            records = [r for tp, part in batch.items() for r in part if r.offset < end[tp]]
            if records:
                deadline = loop.time() + self.timeout  # the timeout is for a read that stops moving
                yield records
            pending = {tp for tp in pending if await consumer.position(tp) < end[tp]}
