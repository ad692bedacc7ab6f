"""The default transport: aiokafka consumers and producers made from :class:`KafkaSettings`.

aiokafka's errors for partitions a member no longer owns are translated here into
:class:`~streams.errors.PartitionRevoked`, so the batch loop knows one error type.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError

from streams.errors import PartitionRevoked
from streams.transport.admin import wait_for_coordinator
from streams.transport.protocols import Batch
from streams.transport.settings import KafkaSettings

__all__ = ["KafkaConsumer", "KafkaTransport"]


class KafkaConsumer:
    """An :class:`AIOKafkaConsumer` behind the :class:`~streams.transport.protocols.Consumer` Protocol."""

    __slots__ = ("kafka", "_pattern", "_settings", "_group_id")

    def __init__(self, consumer: AIOKafkaConsumer, pattern: str | None = None, *,
                 settings: KafkaSettings | None = None, group_id: str | None = None) -> None:
        self.kafka = consumer
        """The aiokafka consumer itself, for what only Kafka has (tests, diagnostics)."""
        self._pattern = pattern
        self._settings, self._group_id = settings, group_id

    async def start(self) -> None:
        """Subscribe (to the pattern, if one was given), wait for the group's coordinator, connect and join.

        Joining before the cluster has a coordinator for the group (a broker just started) works
        too, but aiokafka logs every failed lookup at ERROR: a healthy start would print errors.
        """
        if self._settings is not None and self._group_id is not None:
            await wait_for_coordinator(self._settings, self._group_id)
        if self._pattern is not None:
            self.kafka.subscribe(pattern=self._pattern)
        await self.kafka.start()

    async def stop(self) -> None:
        """Leave the group and disconnect."""
        await self.kafka.stop()

    def assignment(self) -> set[TopicPartition]:
        """The partitions this member owns right now."""
        return self.kafka.assignment()

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int = 0,
                      max_records: int | None = None) -> Batch:
        """Records from the owned ``partitions``, as aiokafka fetched them."""
        return await self.kafka.getmany(*partitions, timeout_ms=timeout_ms,
                                        max_records=max_records)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Fetch ``partition`` from ``offset`` next."""
        try:
            self.kafka.seek(partition, offset)
        except IllegalStateError as exc:
            raise PartitionRevoked(f"{partition.topic}:{partition.partition} is no longer assigned") from exc

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit ``offsets``; a rebalance that took the partitions is :class:`PartitionRevoked`."""
        try:
            await self.kafka.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            raise PartitionRevoked(f"commit refused after a rebalance: {exc}") from exc

    def highwater(self, partition: TopicPartition) -> int | None:
        """The end offset the last fetch saw."""
        return self.kafka.highwater(partition)

    def position_hint(self, partition: TopicPartition) -> int | None:
        """The fetch position from the subscription state (no round trip; None if aiokafka has none)."""
        try:
            state = self.kafka._subscription.subscription.assignment.state_value(partition)
        except AttributeError:  # not subscribed yet, or another aiokafka's internals
            return None
        return state.position if state is not None and state.has_valid_position else None


class KafkaTransport:
    """Makes aiokafka consumers and producers with one set of :class:`KafkaSettings`."""

    __slots__ = ("settings",)

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings

    def consumer(self, topics: Sequence[str], *, group_id: str, role: str,
                 pattern: str | None = None) -> KafkaConsumer:
        """A consumer that commits only what it is told to (see :meth:`KafkaSettings.consumer`)."""
        if pattern is None:
            return KafkaConsumer(self.settings.consumer(*topics, group_id=group_id, role=role),
                                 settings=self.settings, group_id=group_id)
        # New topics matching the pattern (a client's own request topic) are found on metadata
        # refresh: every 10 s rather than aiokafka's default 5 minutes.
        return KafkaConsumer(self.settings.consumer(group_id=group_id, role=role, metadata_max_age_ms=10_000),
                             pattern, settings=self.settings, group_id=group_id)

    def producer(self, role: str) -> AIOKafkaProducer:
        """An idempotent producer that does not linger: the outbox hands it whole batches at flush."""
        return self.settings.producer(role, linger_ms=0)
