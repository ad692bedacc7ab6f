"""The default transport: aiokafka consumers and producers made from :class:`KafkaSettings`.

:func:`aiokafka_producer` and :func:`aiokafka_consumer` build aiokafka's own clients (one place for
their defaults: idempotence, no auto-commit, timeouts); the transport wraps them into its Protocol
types. Outside ``transport/``, ``broker/`` and ``bench/`` only tests call them, as a plain Kafka client.

aiokafka's errors for partitions a member no longer owns are translated here into
:class:`~streams.errors.PartitionRevoked`, so the batch loop knows one error type.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError

from streams.errors import PartitionRevoked
from streams.transport.admin import ensure_topics, wait_for_coordinator
from streams.transport.admin_client import ClusterAdmin
from streams.transport.protocols import Batch, RebalanceListener
from streams.transport.settings import KafkaSettings

__all__ = ["KafkaConsumer", "KafkaLagReader", "KafkaReader", "KafkaTransport", "aiokafka_consumer", "aiokafka_producer"]



def aiokafka_producer(settings: KafkaSettings, role: str, **options: Any) -> AIOKafkaProducer:
    """An idempotent producer with acks from all replicas: retries never duplicate a record.

    ``options`` override the tuning (e.g. ``linger_ms=0`` for a producer fed whole batches).
    """
    config: dict[str, Any] = dict(
        bootstrap_servers=settings.bootstrap,
        client_id=f"{settings.client_id}-{role}",
        acks="all",
        enable_idempotence=True,
        linger_ms=settings.linger_ms,
        max_batch_size=settings.max_batch_bytes,
    )
    config.update(settings.security)
    config.update(options)
    return AIOKafkaProducer(**config)


def aiokafka_consumer(settings: KafkaSettings, *topics: str, group_id: str | None, role: str,
                      **options: Any) -> AIOKafkaConsumer:
    """A consumer that commits only what scoreline says it may (no auto-commit)."""
    defaults: dict[str, Any] = dict(
        bootstrap_servers=settings.bootstrap,
        client_id=f"{settings.client_id}-{role}",
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=settings.fetch_max_records,
        fetch_max_wait_ms=50,
        session_timeout_ms=10_000,
        heartbeat_interval_ms=1_000,
        rebalance_timeout_ms=20_000,
    )
    defaults.update(settings.security)
    defaults.update(options)
    return AIOKafkaConsumer(*topics, **defaults)


class KafkaConsumer:
    """An :class:`AIOKafkaConsumer` behind the :class:`~streams.transport.protocols.Consumer` Protocol."""

    __slots__ = ("kafka", "_pattern", "_settings", "_group_id", "_listener", "_topics")

    def __init__(self, consumer: AIOKafkaConsumer, pattern: str | None = None, *,
                 settings: KafkaSettings | None = None, group_id: str | None = None,
                 listener: RebalanceListener | None = None, topics: Sequence[str] = ()) -> None:
        self.kafka = consumer
        """The aiokafka consumer itself, for what only Kafka has (tests, diagnostics)."""
        self._pattern = pattern
        self._settings, self._group_id = settings, group_id
        self._listener, self._topics = listener, tuple(topics)

    async def start(self) -> None:
        """Subscribe (to the pattern, if one was given), wait for the group's coordinator, connect and join.

        Joining before the cluster has a coordinator for the group (a broker just started) works
        too, but aiokafka logs every failed lookup at ERROR: a healthy start would print errors.
        """
        if self._settings is not None and self._group_id is not None:
            await wait_for_coordinator(self._settings, self._group_id)
        if self._pattern is not None:
            self.kafka.subscribe(pattern=self._pattern, listener=self._listener)
        await self.kafka.start()
        if self._listener is not None and self._pattern is None:
            self.kafka.subscribe(list(self._topics), listener=self._listener)

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

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        """Fetch ``partitions`` from their beginning next."""
        try:
            await self.kafka.seek_to_beginning(*partitions)
        except IllegalStateError as exc:
            raise PartitionRevoked(f"{partitions} no longer assigned") from exc

    async def position(self, partition: TopicPartition) -> int:
        """The next offset to fetch (a round trip if the position is not known yet)."""
        try:
            return int(await self.kafka.position(partition))
        except IllegalStateError as exc:
            raise PartitionRevoked(f"{partition.topic}:{partition.partition} is no longer assigned") from exc

    async def end_offsets(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The end offset of each partition."""
        return dict(await self.kafka.end_offsets(list(partitions)))


class KafkaReader:
    """An :class:`AIOKafkaConsumer` without a group behind the :class:`~streams.transport.protocols.Reader` Protocol."""

    __slots__ = ("kafka",)

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self.kafka = consumer
        """The aiokafka consumer itself."""

    async def start(self) -> None:
        """Connect."""
        await self.kafka.start()

    async def stop(self) -> None:
        """Disconnect."""
        await self.kafka.stop()

    async def topics(self) -> set[str]:
        """Every topic the cluster has now (a metadata request)."""
        return set(await self.kafka.topics())

    async def partitions(self, *topics: str) -> dict[str, set[int]]:
        """The partitions of each of ``topics`` the cluster has, from one fresh metadata request."""
        # What topics() asks for, kept: the consumer's own cache is not refreshed by that request.
        cluster = await self.kafka._client.fetch_all_metadata()  # noqa: SLF001 - aiokafka has no public call
        known = cluster.topics()
        return {t: set(cluster.partitions_for_topic(t) or ()) for t in topics if t in known}

    def assign(self, partitions: Sequence[TopicPartition]) -> None:
        """Read exactly ``partitions``."""
        self.kafka.assign(list(partitions))

    def assignment(self) -> set[TopicPartition]:
        """The partitions assigned."""
        return set(self.kafka.assignment())

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Fetch ``partition`` from ``offset`` next."""
        self.kafka.seek(partition, offset)

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        """Fetch ``partitions`` from their first record still in the log next."""
        await self.kafka.seek_to_beginning(*partitions)

    async def seek_to_end(self, *partitions: TopicPartition) -> None:
        """Fetch only what ``partitions`` get from now on."""
        await self.kafka.seek_to_end(*partitions)

    async def position(self, partition: TopicPartition) -> int:
        """The next offset to fetch."""
        return int(await self.kafka.position(partition))

    async def end_offsets(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The end offset of each partition (the last stable one when reading committed)."""
        return dict(await self.kafka.end_offsets(list(partitions)))

    async def offsets_for_times(self, times: dict[TopicPartition, int]) -> dict[TopicPartition, Any]:
        """The first offset at or after each time."""
        return dict(await self.kafka.offsets_for_times(times))

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int = 0,
                      max_records: int | None = None) -> Batch:
        """Records from the assigned ``partitions``."""
        return await self.kafka.getmany(*partitions, timeout_ms=timeout_ms, max_records=max_records)


async def _start_or_close(start: Callable[[], Awaitable[object]], close: Callable[[], Awaitable[object]]) -> None:
    """Start a client; if that fails or is cancelled, close it before re-raising (nothing half-open leaks)."""
    try:
        await start()
    except BaseException:
        with contextlib.suppress(Exception):
            await close()
        raise


class KafkaLagReader:
    """A group's lag from the cluster: committed offsets from the admin API, end offsets from a group-less consumer."""

    __slots__ = ("_settings", "_role", "_admin", "_offsets")

    def __init__(self, settings: KafkaSettings, role: str) -> None:
        self._settings, self._role = settings, role
        self._admin: ClusterAdmin | None = None
        self._offsets: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        """Connect both clients (again after a start that failed or was cancelled half way: nothing leaks)."""
        if self._admin is None:
            admin = self._settings.admin(client_id=f"{self._settings.client_id}-{self._role}-lag")
            await _start_or_close(admin.start, admin.close)
            self._admin = admin
        if self._offsets is None:
            offsets = aiokafka_consumer(self._settings, group_id=None, role=f"{self._role}-lag")
            await _start_or_close(offsets.start, offsets.stop)
            self._offsets = offsets

    async def stop(self) -> None:
        """Disconnect both clients."""
        if self._offsets is not None:
            await self._offsets.stop()
            self._offsets = None
        if self._admin is not None:
            await self._admin.close()
            self._admin = None

    async def lag(self, group_id: str, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """End offset less the group's committed offset, per partition (the end itself where it committed none)."""
        assert self._admin is not None and self._offsets is not None, "start() first"
        if not partitions:
            return {}
        ends = await self._offsets.end_offsets(list(partitions))
        committed = await self.committed(group_id, partitions)
        return {tp: max(0, ends.get(tp, 0) - (committed[tp] or 0)) for tp in partitions}

    async def committed(self, group_id: str, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
        """The group's committed offsets, from its coordinator (None where it committed none)."""
        assert self._admin is not None, "start() first"
        if not partitions:
            return {}
        offsets = await self._admin.list_consumer_group_offsets(group_id, partitions=list(partitions))
        out: dict[TopicPartition, int | None] = {}
        for tp in partitions:
            meta = offsets.get(tp)
            out[tp] = meta.offset if meta is not None and meta.offset >= 0 else None
        return out


class KafkaTransport:
    """Makes aiokafka consumers and producers with one set of :class:`KafkaSettings`."""

    __slots__ = ("settings",)

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings

    def consumer(self, topics: Sequence[str], *, group_id: str, role: str,
                 pattern: str | None = None, listener: RebalanceListener | None = None) -> KafkaConsumer:
        """A consumer that commits only what it is told to (see :func:`aiokafka_consumer`)."""
        if listener is not None and pattern is None:  # subscribed with the listener once started
            return KafkaConsumer(aiokafka_consumer(self.settings, group_id=group_id, role=role), settings=self.settings,
                                 group_id=group_id, listener=listener, topics=topics)
        if pattern is None:
            return KafkaConsumer(aiokafka_consumer(self.settings, *topics, group_id=group_id, role=role),
                                 settings=self.settings, group_id=group_id)
        # New topics matching the pattern (a client's own request topic) are found on metadata
        # refresh: every 10 s rather than aiokafka's default 5 minutes.
        return KafkaConsumer(aiokafka_consumer(self.settings, group_id=group_id, role=role, metadata_max_age_ms=10_000),
                             pattern, settings=self.settings, group_id=group_id, listener=listener)

    def producer(self, role: str) -> AIOKafkaProducer:
        """An idempotent producer that does not linger: the outbox hands it whole batches at flush."""
        return aiokafka_producer(self.settings, role, linger_ms=0)

    def transactional_producer(self, role: str, transactional_id: str) -> AIOKafkaProducer:
        """aiokafka's transactional producer (``transaction()`` commits on exit, aborts on an exception)."""
        return aiokafka_producer(self.settings, role, transactional_id=transactional_id)

    def lag_reader(self, role: str) -> KafkaLagReader:
        """Reads other groups' lag without joining them."""
        return KafkaLagReader(self.settings, role)

    async def ensure_topics(self, specs: Sequence[Any], *, replication_factor: int | None = None) -> list[str]:
        """Create the missing topics with the admin API (replicas following the cluster unless given)."""
        return await ensure_topics(self.settings.bootstrap, specs, replication_factor=replication_factor,
                                   **self.settings.security)

    def reader(self, role: str, *, read_committed: bool = False, max_records: int = 5000,
               fetch_wait_ms: int = 50) -> KafkaReader:
        """A consumer without a group."""
        return KafkaReader(aiokafka_consumer(self.settings,
            group_id=None, role=role, fetch_max_wait_ms=fetch_wait_ms, max_poll_records=max_records,
            isolation_level="read_committed" if read_committed else "read_uncommitted"))
