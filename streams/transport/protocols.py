"""The narrow seam between scoreline's batch loop and Kafka: the consumer and producer calls it makes.

:class:`~streams.services.batch.BatchService` and :class:`~streams.transport.outbox.Outbox` see
Kafka only through these Protocols, so the loop's own semantics (commit after acknowledgement,
rewind and replay, live before backfill, refused output dead-lettered) can be tested on the
in-memory double (:mod:`streams.transport.memory`) in milliseconds. The default implementation
is aiokafka (:mod:`streams.transport.kafka`). Records and partitions are aiokafka's own small
structs (``ConsumerRecord``, ``TopicPartition``), which the double builds too.

Errors a transport raises for the loop to act on are scoreline's (:mod:`streams.errors`):
``PartitionRevoked`` when a seek or commit names partitions this member no longer owns.
Anything else is an I/O failure: the loop rewinds and replays.

Code above the transport names Kafka's types and errors through this module only
(``TopicPartition``, ``Record``, ``KafkaError``, ``ProducerFenced``, ``RebalanceListener``): which
client library is behind them is the transport's business (``tests/test_import_graph.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeAlias

from aiokafka import ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced

__all__ = ["Batch", "Record", "Consumer", "KafkaError", "LagReader", "Producer", "ProducerFenced", "Reader",
           "RebalanceListener", "RecordBatch", "TopicPartition", "TransactionalProducer", "Transport"]

RebalanceListener: TypeAlias = ConsumerRebalanceListener
"""What a group member's owner subclasses to hear of partitions assigned and revoked (``on_partitions_*``)."""

# Kafka's errors, under the names code above the transport catches: ``KafkaError`` is the root of every
# error a Kafka call raises (``retriable`` says whether trying again may help); ``ProducerFenced``: a newer
# producer with the same transactional id took over.

Record = ConsumerRecord
"""One consumed record: ``topic``, ``partition``, ``offset``, ``timestamp``, ``key``, ``value``, ``headers``."""

Batch = dict[TopicPartition, list[ConsumerRecord]]
"""What one poll returns: the records of each partition, in offset order."""


class Consumer(Protocol):
    """A group member's side of a consumer: the calls the batch loop makes, and no more."""

    async def start(self) -> None:
        """Connect and join the group (subscribing to the topics or pattern it was made with)."""

    async def stop(self) -> None:
        """Leave the group and disconnect."""

    def assignment(self) -> set[TopicPartition]:
        """The partitions this member owns right now."""

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int = 0,
                      max_records: int | None = None) -> Batch:
        """Up to ``max_records`` records from ``partitions`` (default: all owned), waiting up to ``timeout_ms``."""

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Fetch ``partition`` from ``offset`` next; raises ``PartitionRevoked`` if it is not owned."""

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit the next offset to read per partition; raises ``PartitionRevoked`` after a rebalance."""

    def highwater(self, partition: TopicPartition) -> int | None:
        """The partition's end offset as last fetched, or None before the first fetch (for lag)."""

    def position_hint(self, partition: TopicPartition) -> int | None:
        """The next offset this member will fetch, if known without a round trip (for lag)."""

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        """Fetch owned ``partitions`` from their first record still in the log next (a replay)."""

    async def position(self, partition: TopicPartition) -> int:
        """The offset of the next record to be fetched from an owned ``partition``."""

    async def end_offsets(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The offset after the last record of each partition."""


class Reader(Protocol):
    """A consumer without a group: partitions assigned by hand, positions its own, nothing committed.

    What the readers of compacted topics (:mod:`streams.transport.follow`), the reports and the
    replays use. ``role`` names it in the broker's client ids.
    """

    async def start(self) -> None:
        """Connect."""

    async def stop(self) -> None:
        """Disconnect."""

    async def topics(self) -> set[str]:
        """Every topic the cluster has now (asks the cluster, not a cache)."""

    async def partitions(self, *topics: str) -> dict[str, set[int]]:
        """The partition numbers of each of ``topics`` the cluster has (one metadata request; absent ones left out)."""

    def assign(self, partitions: Sequence[TopicPartition]) -> None:
        """Read exactly ``partitions`` from now on (positions of partitions no longer assigned are forgotten)."""

    def assignment(self) -> set[TopicPartition]:
        """The partitions assigned."""

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Fetch ``partition`` from ``offset`` next."""

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        """Fetch ``partitions`` from their first record still in the log next."""

    async def seek_to_end(self, *partitions: TopicPartition) -> None:
        """Fetch only what ``partitions`` get from now on."""

    async def position(self, partition: TopicPartition) -> int:
        """The offset of the next record to be fetched from ``partition``."""

    async def end_offsets(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The offset after the last record (read committed: after the last stable one) of each partition."""

    async def offsets_for_times(self, times: dict[TopicPartition, int]) -> dict[TopicPartition, Any]:
        """Per partition, the first offset whose record's timestamp is at or after the time (``.offset``), or None."""

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int = 0,
                      max_records: int | None = None) -> Batch:
        """Up to ``max_records`` records from ``partitions`` (default: all assigned), waiting up to ``timeout_ms``."""


class RecordBatch(Protocol):
    """A batch being built for one partition (aiokafka's ``BatchBuilder``)."""

    def append(self, *, timestamp: int | None, key: bytes | None, value: bytes | None,
               headers: list[tuple[str, bytes]]) -> object | None:
        """Add a record; None when the batch is full (the record was not added)."""


class Producer(Protocol):
    """An idempotent producer: the calls the outbox and the batch loop make."""

    async def start(self) -> None:
        """Connect."""

    async def stop(self) -> None:
        """Flush and disconnect."""

    async def partitions_for(self, topic: str) -> set[int]:
        """The partition numbers of ``topic`` (waits for metadata)."""

    def create_batch(self) -> RecordBatch:
        """An empty record batch to fill and hand to :meth:`send_batch`."""

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> asyncio.Future[Any]:
        """Queue a whole record batch for one partition; the future resolves on acknowledgement."""

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                   partition: int | None = None, timestamp_ms: int | None = None,
                   headers: Sequence[tuple[str, bytes]] | None = None) -> asyncio.Future[Any]:
        """Queue one record; the future resolves on acknowledgement (or raises the refusal)."""

    async def send_and_wait(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                            partition: int | None = None, timestamp_ms: int | None = None,
                            headers: Sequence[tuple[str, bytes]] | None = None) -> Any:
        """Send one record and wait for its acknowledgement (its metadata: ``partition``, ``offset``)."""


class TransactionalProducer(Protocol):
    """A producer holding a transactional id: what it sends in one transaction lands whole or not at all.

    Starting it fences every earlier producer of the same id: their sends and commits raise
    :class:`ProducerFenced` from then on. Read-committed readers never see an aborted transaction.
    """

    async def start(self) -> None:
        """Connect and take the transactional id (fencing every earlier holder of it)."""

    async def stop(self) -> None:
        """Disconnect (a transaction still open is aborted)."""

    def transaction(self) -> AbstractAsyncContextManager[Any]:
        """Begin a transaction; commit it on leaving the block, abort it if the block raises."""

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                   partition: int | None = None, timestamp_ms: int | None = None,
                   headers: Sequence[tuple[str, bytes]] | None = None) -> asyncio.Future[Any]:
        """Queue one record inside the open transaction."""


class LagReader(Protocol):
    """Reads how far a consumer group is behind, without joining it (the router's view of the workers)."""

    async def start(self) -> None:
        """Connect."""

    async def stop(self) -> None:
        """Disconnect."""

    async def lag(self, group_id: str, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """Records past ``group_id``'s committed offset on each of ``partitions`` (all of them if it has none)."""

    async def committed(self, group_id: str, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
        """``group_id``'s committed offset on each of ``partitions`` (None where it has committed none)."""


class Transport(Protocol):
    """Makes the consumers and producers a service uses (nothing connects until ``start``)."""

    def consumer(self, topics: Sequence[str], *, group_id: str, role: str,
                 pattern: str | None = None, listener: RebalanceListener | None = None) -> Consumer:
        """A group member reading ``topics``, or every topic matching the regex ``pattern`` if given;
        ``listener`` hears of each assignment and revocation."""

    def producer(self, role: str) -> Producer:
        """A producer fed whole batches (no lingering)."""

    def lag_reader(self, role: str) -> LagReader:
        """A reader of consumer groups' lag (nothing connects until ``start``)."""

    def transactional_producer(self, role: str, transactional_id: str) -> TransactionalProducer:
        """A producer of whole transactions under ``transactional_id`` (nothing connects until ``start``)."""

    async def ensure_topics(self, specs: Sequence[Any], *, replication_factor: int | None = None) -> list[str]:
        """Create the topics of ``specs`` (``streams.topics.TopicSpec``) that do not exist yet; return their names."""

    def reader(self, role: str, *, read_committed: bool = False, max_records: int = 5000,
               fetch_wait_ms: int = 50) -> Reader:
        """A consumer without a group (nothing connects until ``start``); ``read_committed`` skips aborted
        transactions and stops at the last stable offset; a fetch waits ``fetch_wait_ms`` at most for records."""
