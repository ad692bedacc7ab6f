"""Reading every partition of some topics from "now" on, without a consumer group.

The demo, the tests and the reports use it to watch reply, dead-letter and shadow topics
without joining (or disturbing) any group. It reads with the transport's group-less
:class:`~streams.transport.protocols.Reader`, so it watches the in-memory transport the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable

from streams.transport.kafka import KafkaTransport
from streams.transport.protocols import Reader, Record, TopicPartition, Transport
from streams.transport.settings import KafkaSettings

__all__ = ["TopicTail"]


class TopicTail:
    """Collects the records that arrive on ``topics`` after ``start`` (or from the beginning)."""

    def __init__(self, kafka: KafkaSettings, topics: Iterable[str], *, from_beginning: bool = False,
                 on_record: Callable[[Record], None] | None = None, transport: Transport | None = None) -> None:
        self.kafka = kafka
        self.transport = transport if transport is not None else KafkaTransport(kafka)
        self.topics = list(topics)
        self.from_beginning = from_beginning
        self.on_record = on_record
        self.records: list[Record] = []
        self._consumer: Reader | None = None
        self._task: asyncio.Task[None] | None = None
        self._arrived = asyncio.Event()

    async def __aenter__(self) -> TopicTail:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Assign every partition and fix the starting offsets before returning."""
        self._consumer = consumer = self.transport.reader("tail", fetch_wait_ms=20)
        await consumer.start()
        try:
            partitions = await self._partitions(consumer)
        except BaseException:
            await consumer.stop()
            raise
        consumer.assign(partitions)
        if self.from_beginning:
            await consumer.seek_to_beginning(*partitions)
        else:
            await consumer.seek_to_end(*partitions)
        for tp in partitions:
            await consumer.position(tp)
        self._task = asyncio.create_task(self._read(consumer))

    async def _partitions(self, reader: Reader) -> list[TopicPartition]:
        partitions: dict[str, set[int]] = {}
        for _ in range(50):  # a topic created a moment ago may not be in the metadata yet
            partitions = await reader.partitions(*self.topics)
            if all(partitions.get(topic) for topic in self.topics):
                break
            await asyncio.sleep(0.1)
        else:
            missing = [topic for topic in self.topics if not partitions.get(topic)]
            raise LookupError(f"topic {missing[0]} does not exist")
        return [TopicPartition(topic, p) for topic in self.topics for p in sorted(partitions[topic])]

    async def stop(self) -> None:
        """Stop reading and disconnect (what was collected stays in ``records``)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    async def _read(self, consumer: Reader) -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    self.records.append(record)
                    if self.on_record is not None:
                        self.on_record(record)
            if batch:
                self._arrived.set()

    async def wait_for(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``condition()`` holds (checked as records arrive) or ``timeout`` passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._arrived.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), min(remaining, 0.5))
        return True
