"""Everything one consumed batch produces, sent together and acknowledged before the commit."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import Any, Generic, NamedTuple, TypeVar

from routing.allocation import partitions_for_keys
from streams.transport.protocols import Producer, RecordBatch

__all__ = ["Outbox", "Sent"]

Tag = TypeVar("Tag")


class _Pending(NamedTuple):
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    timestamp_ms: int | None
    tag: Any


Sent = list[tuple[asyncio.Future, str, int, list[_Pending]]]
"""What :meth:`Outbox.send` handed over: per record batch, its acknowledgement, topic, partition and records."""


class Outbox(Generic[Tag]):
    """Collects the records of one batch; ``flush`` sends them and waits for every acknowledgement.

    Records are grouped by topic and partition and handed to the producer as one record
    batch per partition (``create_batch``/``send_batch``): no per-record call into the
    producer, no per-record future, one wait for the broker per batch. The producer stays
    idempotent with acks from all replicas (it stamps each batch's sequence when it sends it).
    A partition is chosen as a plain keyed produce would (murmur2 of the key), or spread
    round-robin for records without key or partition.

    Kafka writes a record batch whole or not at all, so a refused batch is retried record
    by record: ``flush`` reports exactly the records the broker refused, as before.
    """

    __slots__ = ("_producer", "_queued", "_count", "_spread")

    def __init__(self, producer: Producer) -> None:
        self._producer = producer
        self._queued: dict[tuple[str, int | None], list[_Pending]] = {}
        self._count = 0
        self._spread = itertools.count()

    def __len__(self) -> int:
        return self._count

    def put(self, topic: str, value: bytes, *, key: bytes | None = None, partition: int | None = None,
            headers: list[tuple[str, bytes]] | None = None, timestamp_ms: int | None = None,
            tag: Tag | None = None) -> None:
        """Queue one record (nothing is sent before ``flush``); ``tag`` identifies it in the failures."""
        slot = (topic, partition)
        queued = self._queued.get(slot)
        if queued is None:
            queued = self._queued[slot] = []
        # The record-batch builder takes headers as a list only.
        queued.append(_Pending(key, value, headers if type(headers) is list else list(headers or ()), timestamp_ms,
                               tag))
        self._count += 1

    async def add(self, topic: str, value: bytes, *, key: bytes | None = None, partition: int | None = None,
                  headers: list[tuple[str, bytes]] | None = None, timestamp_ms: int | None = None,
                  tag: Tag | None = None) -> None:
        """``put``, for callers that await (it never waits)."""
        self.put(topic, value, key=key, partition=partition, headers=headers, timestamp_ms=timestamp_ms, tag=tag)

    def discard(self) -> None:
        """Drop everything queued and not yet flushed (the batch that queued it failed)."""
        self._queued, self._count = {}, 0

    async def flush(self) -> list[tuple[Tag | None, BaseException]]:
        """Send every record queued so far and wait; return the ones the broker refused, with why."""
        return await self.acknowledged(await self.send())

    async def send(self) -> Sent:
        """Hand every record queued so far to the producer, in order; the acknowledgements to wait for.

        Nothing is awaited but the producer taking the batches, so the caller may go on (handle the
        next batch) while the broker acknowledges these; the producer keeps their order per partition.
        """
        if not self._count:
            return []
        queued, self._queued, self._count = self._queued, {}, 0
        sent: Sent = []
        for (topic, partition), records in (await self._by_partition(queued)).items():
            for builder, rows in self._batches(records):
                sent.append((await self._producer.send_batch(builder, topic, partition=partition), topic,
                             partition, rows))
        return sent

    async def acknowledged(self, sent: Sent) -> list[tuple[Tag | None, BaseException]]:
        """Wait for ``sent``'s acknowledgements; the records the broker refused, with why (retried one by one)."""
        if not sent:
            return []
        outcomes: list[Any] = await asyncio.gather(*(s[0] for s in sent), return_exceptions=True)
        failures: list[tuple[Tag | None, BaseException]] = []
        for (_, topic, partition, rows), outcome in zip(sent, outcomes):
            if isinstance(outcome, BaseException):
                failures += await self._one_by_one(topic, partition, rows)
        return failures

    async def _by_partition(self, queued: dict[tuple[str, int | None], list[_Pending]]
                            ) -> dict[tuple[str, int], list[_Pending]]:
        """Give every record its partition: as asked, by key, or round-robin."""
        placed: dict[tuple[str, int], list[_Pending]] = {}
        for (topic, partition), records in queued.items():
            if partition is not None:
                placed.setdefault((topic, partition), []).extend(records)
                continue
            count = len(await self._producer.partitions_for(topic))
            # Kafka's default partitioner for keyed records (as a plain keyed produce would place them),
            # hashed for the whole batch in one numpy pass rather than one pure-Python murmur2 each.
            hashed = iter(partitions_for_keys([r.key for r in records if r.key is not None], count))
            for record in records:
                p = next(hashed) if record.key is not None else next(self._spread) % count
                placed.setdefault((topic, p), []).append(record)
        return placed

    def _batches(self, records: list[_Pending]) -> Iterator[tuple[RecordBatch, list[_Pending]]]:
        """Record batches holding ``records`` in order, each as large as the producer allows."""
        builder, rows = self._producer.create_batch(), list[_Pending]()
        for record in records:
            if builder.append(timestamp=record.timestamp_ms, key=record.key, value=record.value,
                              headers=record.headers) is None:
                yield builder, rows
                builder, rows = self._producer.create_batch(), []
                # A record larger than a whole batch still goes alone; the broker judges its size.
                builder.append(timestamp=record.timestamp_ms, key=record.key, value=record.value,
                               headers=record.headers)
            rows.append(record)
        yield builder, rows

    async def _one_by_one(self, topic: str, partition: int, rows: list[_Pending]
                          ) -> list[tuple[Tag | None, BaseException]]:
        """Resend a refused batch record by record, to find which records the broker refuses."""
        failures: list[tuple[Tag | None, BaseException]] = []
        futures = []
        for row in rows:
            try:
                futures.append(await self._producer.send(topic, row.value, key=row.key, partition=partition,
                                                         headers=row.headers, timestamp_ms=row.timestamp_ms))
            except Exception as exc:  # noqa: BLE001 - refused before sending (e.g. too large): that record alone fails
                futures.append(_failed(exc))
        for row, outcome in zip(rows, await asyncio.gather(*futures, return_exceptions=True)):
            if isinstance(outcome, BaseException):
                failures.append((row.tag, outcome))
        return failures


def _failed(exc: BaseException) -> asyncio.Future:
    future = asyncio.get_running_loop().create_future()
    future.set_exception(exc)
    return future
