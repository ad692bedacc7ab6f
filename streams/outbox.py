"""Everything one consumed batch produces, sent together and acknowledged before the commit."""

from __future__ import annotations

import asyncio
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaProducer

__all__ = ["Outbox"]

Tag = TypeVar("Tag")


class Outbox(Generic[Tag]):
    """Collects sends for one batch; ``flush`` waits for every acknowledgement.

    The producer batches and pipelines the records itself; awaiting ``send`` only enqueues,
    so a batch of sends costs one wait for the broker, not one per record.
    """

    __slots__ = ("_producer", "_futures", "_tags")

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._futures: list[asyncio.Future] = []
        self._tags: list[Tag | None] = []

    def __len__(self) -> int:
        return len(self._futures)

    async def add(self, topic: str, value: bytes, *, key: bytes | None = None, partition: int | None = None,
                  headers: list[tuple[str, bytes]] | None = None, timestamp_ms: int | None = None,
                  tag: Tag | None = None) -> None:
        """Queue one record; ``tag`` identifies it in ``flush``'s failures."""
        future = await self._producer.send(topic, value, key=key, partition=partition, headers=headers,
                                           timestamp_ms=timestamp_ms)
        self._futures.append(future)
        self._tags.append(tag)

    async def flush(self) -> list[tuple[Tag | None, BaseException]]:
        """Wait for every record queued so far; return the ones the broker refused, with why."""
        if not self._futures:
            return []
        outcomes: list[Any] = await asyncio.gather(*self._futures, return_exceptions=True)
        failures = [(tag, out) for tag, out in zip(self._tags, outcomes) if isinstance(out, BaseException)]
        self._futures.clear()
        self._tags.clear()
        return failures
