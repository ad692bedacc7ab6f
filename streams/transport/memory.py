"""An in-memory transport: a double of the Kafka calls the batch loop makes, for tests of the loop itself.

Like httpx's ``MockTransport`` it is part of the package, so users who build on
:class:`~streams.services.batch.BatchService` can test their own services without a broker::

    broker = MemoryBroker()
    broker.create_topic("work", partitions=2)
    broker.produce("work", b'{"x": 1}', key=b"u-1")
    async with MyService(kafka, layout, group_id="g", topics=["work"], transport=MemoryTransport(broker)) as s:
        ...
    broker.committed("g")  # {TopicPartition("work", 0): 1}

What it models: partitioned logs with offsets; a group's committed offsets (a member starts
from them, or from the beginning); fetching from the owned partitions in order, up to a
limit, waiting for new records up to a timeout; idempotent-free, in-order appends whose
acknowledgement can be held back (:meth:`MemoryBroker.hold_acks`) or refused
(:meth:`MemoryBroker.refuse`); a record batch written whole or not at all; readers without a
group (:class:`MemoryReader`: assign, seek, positions, end offsets, offsets for times); and
compaction (:meth:`MemoryBroker.compact`: the newest record per key stays, at its offset, and
readers skip the gaps), which Kafka's log cleaner does whenever it likes.

What it does not model, on purpose: group membership beyond one member per group (a second
member of a live group is refused), rebalances, replication, idempotence, retries, real I/O
errors, timestamps beyond the producer's. Those are Kafka's behaviour and are tested against
a real broker; this double replaces no broker test.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import IllegalStateError, ProducerFenced
from aiokafka.structs import OffsetAndTimestamp

from routing.allocation import murmur2
from streams.errors import PartitionRevoked
from streams.transport.protocols import Batch

__all__ = ["MemoryBroker", "MemoryLagReader", "MemoryReader", "MemoryTransport", "RecordRefused"]

Refusal = Callable[[str, ConsumerRecord], "BaseException | None"]


class RecordRefused(Exception):
    """What the double's broker answers for a record a refusal rule refuses (as Kafka answers a produce)."""


class MemoryBroker:
    """Topics, their logs, and each group's committed offsets, in memory."""

    def __init__(self, default_partitions: int = 1) -> None:
        self.default_partitions = default_partitions
        """Partitions of a topic first named by a producer or a consumer (as ``auto.create.topics``)."""
        self._logs: dict[str, list[list[ConsumerRecord | None]]] = {}
        """Topic -> partition -> records by offset; None where compaction removed one."""
        self._commits: dict[str, dict[TopicPartition, int]] = {}
        self._members: dict[str, MemoryConsumer] = {}
        self._epochs: dict[str, int] = {}
        """Transactional id -> the epoch of its newest producer (older ones are fenced)."""
        self._refusals: list[Refusal] = []
        self._held: asyncio.Event | None = None
        self._changed: asyncio.Condition | None = None
        self.commit_log: list[tuple[str, dict[TopicPartition, int]]] = []
        """Every commit in the order it was made: ``(group, offsets)``."""
        self.events: list[str] = []
        """What happened, in order: ``acked <topic>`` per acknowledged send, ``committed <group>`` per commit."""
        self.failing_commits = 0
        """Refuse this many commits to come with a ``RuntimeError`` (a commit that failed in transit)."""
        self.commit_delays: list[float] = []
        """Seconds the next commits take, one value each in order (then none): round trips of uneven length."""

    # Topics and records, for tests to set up and inspect.

    def create_topic(self, topic: str, partitions: int | None = None) -> None:
        """Create ``topic`` (no-op if it exists)."""
        if topic not in self._logs:
            self._logs[topic] = [[] for _ in range(partitions or self.default_partitions)]

    @property
    def topics(self) -> list[str]:
        """Every topic, sorted."""
        return sorted(self._logs)

    def produce(self, topic: str, value: bytes | None, *, key: bytes | None = None, partition: int = 0,
                headers: Sequence[tuple[str, bytes]] = (), timestamp_ms: int | None = None) -> ConsumerRecord:
        """Append one record directly (a test's input), acknowledged at once; returns it."""
        self.create_topic(topic)
        record = self._append(topic, partition, key, value, headers, timestamp_ms)
        self._notify()
        return record

    def records(self, topic: str) -> list[ConsumerRecord]:
        """Every record of ``topic`` (that compaction left), partition by partition, in offset order."""
        return [r for log in self._logs.get(topic, []) for r in log if r is not None]

    def compact(self, topic: str, *, drop_tombstones: bool = False) -> int:
        """Do what Kafka's log cleaner does to ``topic``: keep the newest record of each key, at its offset.

        Records without a key stay. A tombstone (no value) stays as the newest of its key unless
        ``drop_tombstones`` (the cleaner removes them after ``delete.retention.ms``). Returns how
        many records went.
        """
        removed = 0
        for log in self._logs.get(topic, []):
            newest = {r.key: r.offset for r in log if r is not None and r.key is not None}
            for i, r in enumerate(log):
                if r is None or r.key is None:
                    continue
                if newest[r.key] != r.offset or (drop_tombstones and r.value is None):
                    log[i] = None
                    removed += 1
        return removed

    def values(self, topic: str) -> list[bytes | None]:
        """The values of :meth:`records`."""
        return [r.value for r in self.records(topic)]

    def committed(self, group: str) -> dict[TopicPartition, int]:
        """The group's committed offsets (the next offset to read, per partition)."""
        return dict(self._commits.get(group, {}))

    # Faults.

    def refuse(self, rule: Refusal) -> None:
        """Refuse every produced record for which ``rule(topic, record)`` returns an exception.

        A record batch holding a refused record is refused whole, as Kafka does.
        """
        self._refusals.append(rule)

    def hold_acks(self) -> None:
        """Hold back the acknowledgement of every produced record until :meth:`release_acks`."""
        self._held = asyncio.Event()

    def release_acks(self) -> None:
        """Acknowledge what was held and stop holding."""
        if self._held is not None:
            self._held.set()
            self._held = None

    # For the double's clients.

    def _log(self, topic: str) -> list[list[ConsumerRecord | None]]:
        self.create_topic(topic)
        return self._logs[topic]

    def _first(self, tp: TopicPartition) -> int:
        """The offset of the partition's first record still in the log (its end if it has none)."""
        log = self._log(tp.topic)[tp.partition]
        return next((i for i, r in enumerate(log) if r is not None), len(log))

    def _append(self, topic: str, partition: int, key: bytes | None, value: bytes | None,
                headers: Sequence[tuple[str, bytes]], timestamp_ms: int | None) -> ConsumerRecord:
        log = self._log(topic)[partition]
        record = ConsumerRecord(
            topic=topic, partition=partition, offset=len(log),
            timestamp=timestamp_ms if timestamp_ms is not None else int(time.time() * 1000), timestamp_type=0,
            key=key, value=value, checksum=None, serialized_key_size=len(key) if key is not None else -1,
            serialized_value_size=len(value) if value is not None else -1, headers=tuple(headers))
        log.append(record)
        return record

    def _partition_for(self, topic: str, key: bytes | None) -> int:
        """Where Kafka's default partitioner puts ``key`` (partition 0 for a record without a key)."""
        return (murmur2(key) & 0x7FFFFFFF) % len(self._log(topic)) if key is not None else 0

    def _refusal(self, topic: str, record: ConsumerRecord) -> BaseException | None:
        for rule in self._refusals:
            if (exc := rule(topic, record)) is not None:
                return exc
        return None

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    def _notify(self) -> None:
        changed = self._changed
        if changed is None:
            return

        async def wake() -> None:
            async with changed:
                changed.notify_all()

        try:
            asyncio.get_running_loop().create_task(wake())
        except RuntimeError:  # no loop running: nobody can be waiting
            pass

    def _join(self, member: MemoryConsumer) -> None:
        current = self._members.get(member.group_id)
        if current is not None and current is not member:
            raise RuntimeError(f"the in-memory transport models one member per group; {member.group_id!r} has one "
                               "(test group membership and rebalances against a real broker)")
        self._members[member.group_id] = member

    def _leave(self, member: MemoryConsumer) -> None:
        if self._members.get(member.group_id) is member:
            del self._members[member.group_id]

    def _commit(self, group: str, offsets: dict[TopicPartition, int]) -> None:
        if self.failing_commits > 0:
            self.failing_commits -= 1
            raise RuntimeError("commit failed in transit (MemoryBroker.failing_commits)")
        self._commits.setdefault(group, {}).update(offsets)
        self.commit_log.append((group, dict(offsets)))
        self.events.append(f"committed {group}")


class _PositionedReads:
    """What a group member and a group-less reader of the double share: positions, seeks, fetching from them.

    A partition that is not owned is refused with :meth:`_not_owned`'s error (a group member's
    ``PartitionRevoked``, a reader's ``IllegalStateError``, as aiokafka raises them).
    """

    broker: MemoryBroker
    _positions: dict[TopicPartition, int]
    _running: bool

    def _refresh(self) -> None:
        """Take on partitions that appeared since (a group member's subscription); nothing by default."""

    def _room(self, max_records: int | None) -> int:
        return max_records if max_records is not None else 1_000_000

    def _not_owned(self, partition: TopicPartition) -> Exception:
        return PartitionRevoked(f"{partition.topic}:{partition.partition} is not assigned to this member")

    def _owned(self, partition: TopicPartition) -> None:
        if partition not in self._positions:
            raise self._not_owned(partition)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Fetch ``partition`` from ``offset`` next."""
        self._owned(partition)
        self._positions[partition] = offset

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        """Fetch ``partitions`` from the first record compaction left."""
        for tp in partitions:
            self.seek(tp, self.broker._first(tp))

    async def position(self, partition: TopicPartition) -> int:
        """The next offset to fetch."""
        self._owned(partition)
        return self._positions[partition]

    async def end_offsets(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The offset after each partition's last record."""
        return {tp: len(self.broker._log(tp.topic)[tp.partition]) for tp in partitions}

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int = 0,
                      max_records: int | None = None) -> Batch:
        """Records from the positions on, partition by partition, up to ``max_records``, skipping what compaction
        removed; waits up to ``timeout_ms`` for some."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000
        while True:
            batch = self._take(partitions, self._room(max_records))
            remaining = deadline - loop.time()
            if batch or remaining <= 0 or not self._running:
                return batch
            changed = self.broker._condition()
            async with changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), remaining)

    def _take(self, partitions: Sequence[TopicPartition], room: int) -> Batch:
        self._refresh()
        batch: Batch = {}
        for tp in partitions or sorted(self._positions):
            self._owned(tp)
            if room <= 0:
                break
            log = self.broker._log(tp.topic)[tp.partition]
            position = self._positions[tp]
            taken = log[position:position + room]
            self._positions[tp] = position + len(taken)
            records = [r for r in taken if r is not None]
            if records:
                batch[tp] = records
                room -= len(records)
        return batch


class MemoryConsumer(_PositionedReads):
    """The only member of its group: owns every partition of its topics (or of the topics matching its pattern)."""

    def __init__(self, broker: MemoryBroker, topics: Sequence[str], *, group_id: str,
                 pattern: str | None = None, listener: Any = None) -> None:
        self.broker = broker
        self.listener = listener
        self.group_id = group_id
        self._topics = tuple(topics)
        self._pattern = re.compile(pattern) if pattern is not None else None
        self._positions: dict[TopicPartition, int] = {}
        self._running = False

    async def start(self) -> None:
        """Join the group: own the partitions, positioned at the committed offsets (else the beginning)."""
        self.broker._join(self)
        self._running = True
        self._refresh()
        if self.listener is not None:
            await self.listener.on_partitions_assigned(set(self._positions))

    async def stop(self) -> None:
        """Leave the group."""
        self._running = False
        self._positions.clear()
        self.broker._leave(self)

    def _refresh(self) -> None:
        """Take the partitions of topics created since (a pattern subscription finds new topics)."""
        if not self._running:
            return
        if self._pattern is not None:
            names = [t for t in self.broker.topics if self._pattern.fullmatch(t)]
        else:
            names = list(self._topics)
        committed = self.broker._commits.get(self.group_id, {})
        for topic in names:
            for partition in range(len(self.broker._log(topic))):
                tp = TopicPartition(topic, partition)
                if tp not in self._positions:
                    self._positions[tp] = committed.get(tp, 0)

    def assignment(self) -> set[TopicPartition]:
        """Every partition of the subscribed topics."""
        self._refresh()
        return set(self._positions)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Store ``offsets`` as the group's, after a round trip (``MemoryBroker.commit_delays``, else a yield)."""
        delays = self.broker.commit_delays
        await asyncio.sleep(delays.pop(0) if delays else 0)
        if not self._running:
            raise PartitionRevoked("this member left the group")
        self.broker._commit(self.group_id, offsets)

    def highwater(self, partition: TopicPartition) -> int | None:
        """The partition's end offset."""
        return len(self.broker._log(partition.topic)[partition.partition])

    def position_hint(self, partition: TopicPartition) -> int | None:
        """The next offset to fetch."""
        return self._positions.get(partition)

class _Builder:
    """A record batch for one partition: at most ``capacity`` records."""

    __slots__ = ("rows", "capacity")

    def __init__(self, capacity: int) -> None:
        self.rows: list[tuple[int | None, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
        self.capacity = capacity

    def append(self, *, timestamp: int | None, key: bytes | None, value: bytes | None,
               headers: list[tuple[str, bytes]]) -> object | None:
        if len(self.rows) >= self.capacity:
            return None
        self.rows.append((timestamp, key, value, headers))
        return len(self.rows)


class MemoryProducer:
    """Appends to the broker's logs; each send's future resolves on acknowledgement."""

    def __init__(self, broker: MemoryBroker, *, batch_capacity: int = 500) -> None:
        self.broker = broker
        self.batch_capacity = batch_capacity
        """Records per record batch: the outbox splits a partition's records into batches this large."""
        self.sent_batches = 0
        """Record batches handed over (``send_batch`` calls)."""

    async def start(self) -> None:
        """Nothing to connect."""

    async def stop(self) -> None:
        """Nothing to flush: every send is appended or refused when made."""

    async def partitions_for(self, topic: str) -> set[int]:
        """The partitions of ``topic`` (created with the broker's default if new)."""
        return set(range(len(self.broker._log(topic))))

    def create_batch(self) -> _Builder:
        """An empty record batch."""
        return _Builder(self.batch_capacity)

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> asyncio.Future[Any]:
        """Append the whole batch, or refuse it whole if any of its records is refused."""
        self.sent_batches += 1
        rows = batch.rows
        return self._acknowledge(topic, partition, rows)

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                   partition: int | None = None, timestamp_ms: int | None = None,
                   headers: Sequence[tuple[str, bytes]] | None = None) -> asyncio.Future[Any]:
        """Append one record to ``partition``; without one, where Kafka's default partitioner puts its key
        (partition 0 for a record without a key)."""
        if partition is None:
            partition = self.broker._partition_for(topic, key)
        return self._acknowledge(topic, partition, [(timestamp_ms, key, value, list(headers or ()))])

    async def send_and_wait(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                            partition: int | None = None, timestamp_ms: int | None = None,
                            headers: Sequence[tuple[str, bytes]] | None = None) -> Any:
        """Append one record and wait for its acknowledgement."""
        return await (await self.send(topic, value, key, partition, timestamp_ms, headers))

    def _acknowledge(self, topic: str, partition: int, rows: list[Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        held = self.broker._held

        def land() -> None:
            probe = [ConsumerRecord(topic, partition, -1, ts or 0, 0, key, value, None, 0, 0, tuple(hs))
                     for ts, key, value, hs in rows]
            for record in probe:
                if (exc := self.broker._refusal(topic, record)) is not None:
                    future.set_exception(exc)
                    return
            appended = [self.broker._append(topic, partition, key, value, hs, ts) for ts, key, value, hs in rows]
            self.broker.events.append(f"acked {topic}")
            self.broker._notify()
            future.set_result(appended[-1].offset if appended else None)

        if held is None:
            land()
        else:
            async def later(event: asyncio.Event) -> None:
                await event.wait()
                land()

            loop.create_task(later(held))
        return future


class MemoryTransactionalProducer:
    """Whole transactions: what one sends lands at its commit, all at once, or never.

    Every write of the double is committed, so a read-committed reader and any other see the
    same: nothing of a transaction until it commits. Starting one fences the earlier producers
    of its transactional id, as Kafka's epoch bump does.
    """

    def __init__(self, broker: MemoryBroker, transactional_id: str) -> None:
        self.broker = broker
        self.transactional_id = transactional_id
        self._epoch: int | None = None
        self._open: list[tuple[str, int, bytes | None, bytes | None, list[tuple[str, bytes]], int | None]] | None = None

    async def start(self) -> None:
        """Take the transactional id: every earlier producer of it is fenced from now on."""
        epochs = self.broker._epochs
        self._epoch = epochs[self.transactional_id] = epochs.get(self.transactional_id, 0) + 1

    async def stop(self) -> None:
        """Abort what is open."""
        self._open = None

    def _check(self) -> None:
        if self._epoch is None:
            raise IllegalStateError("start() first")
        if self.broker._epochs.get(self.transactional_id) != self._epoch:
            raise ProducerFenced()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """Begin; on leaving the block append every record sent in it (fenced: raise, append nothing)."""
        self._check()
        self._open = []
        try:
            yield
            self._check()
            rows = self._open
        finally:
            self._open = None
        for topic, partition, key, value, headers, ts in rows:
            self.broker._append(topic, partition, key, value, headers, ts)
        self.broker.events.append(f"committed transaction {self.transactional_id}")
        self.broker._notify()

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                   partition: int | None = None, timestamp_ms: int | None = None,
                   headers: Sequence[tuple[str, bytes]] | None = None) -> asyncio.Future[Any]:
        """Hold one record for the commit of the open transaction."""
        self._check()
        if self._open is None:
            raise IllegalStateError("send outside a transaction")
        if partition is None:
            partition = self.broker._partition_for(topic, key)
        self._open.append((topic, partition, key, value, list(headers or ()), timestamp_ms))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


class MemoryTransport:
    """Makes the double's consumers and producers over one :class:`MemoryBroker`."""

    def __init__(self, broker: MemoryBroker | None = None) -> None:
        self.broker = broker if broker is not None else MemoryBroker()
        self.consumers: list[MemoryConsumer] = []
        self.producers: list[MemoryProducer] = []
        self.readers: list[MemoryReader] = []

    def consumer(self, topics: Sequence[str], *, group_id: str, role: str,
                 pattern: str | None = None, listener: Any = None) -> MemoryConsumer:
        """A member of ``group_id`` reading ``topics`` (or those matching ``pattern``); ``listener`` hears of the
        one assignment a member gets here (every partition, at its start)."""
        consumer = MemoryConsumer(self.broker, topics, group_id=group_id, pattern=pattern, listener=listener)
        self.consumers.append(consumer)
        return consumer

    def producer(self, role: str) -> MemoryProducer:
        """A producer appending to the broker's logs."""
        producer = MemoryProducer(self.broker)
        self.producers.append(producer)
        return producer

    def lag_reader(self, role: str) -> MemoryLagReader:
        """A reader of the broker's groups' lag."""
        return MemoryLagReader(self.broker)

    def transactional_producer(self, role: str, transactional_id: str) -> MemoryTransactionalProducer:
        """A producer of whole transactions under ``transactional_id``."""
        return MemoryTransactionalProducer(self.broker, transactional_id)

    async def ensure_topics(self, specs: Sequence[Any], *, replication_factor: int | None = None) -> list[str]:
        """Create the missing topics with their partition counts (configs such as compaction are not kept:
        :meth:`MemoryBroker.compact` compacts when a test says so)."""
        created = [s.name for s in specs if s.name not in self.broker._logs]
        for spec in specs:
            self.broker.create_topic(spec.name, spec.partitions)
        return created

    def reader(self, role: str, *, read_committed: bool = False, max_records: int = 5000,
               fetch_wait_ms: int = 50) -> MemoryReader:
        """A consumer without a group over the broker's logs (every write here is committed)."""
        reader = MemoryReader(self.broker, max_records=max_records)
        self.readers.append(reader)
        return reader


class MemoryReader(_PositionedReads):
    """Reads assigned partitions of the broker's logs from positions of its own, as a group-less consumer does.

    A partition assigned without a seek starts at its beginning (the first record compaction left).
    """

    def __init__(self, broker: MemoryBroker, *, max_records: int = 5000) -> None:
        self.broker = broker
        self.max_records = max_records
        self._positions: dict[TopicPartition, int] = {}
        self._running = False

    async def start(self) -> None:
        """Nothing to connect."""
        self._running = True

    async def stop(self) -> None:
        """Forget the assignment."""
        self._running = False
        self._positions.clear()

    def _room(self, max_records: int | None) -> int:
        return max_records or self.max_records

    def _not_owned(self, partition: TopicPartition) -> Exception:
        return IllegalStateError(f"{partition.topic}:{partition.partition} is not assigned to this reader")

    async def topics(self) -> set[str]:
        """Every topic of the broker."""
        return set(self.broker.topics)

    async def partitions(self, *topics: str) -> dict[str, set[int]]:
        """The partitions of each of ``topics`` the broker has (asking creates none)."""
        return {t: set(range(len(self.broker._logs[t]))) for t in topics if t in self.broker._logs}

    def assign(self, partitions: Sequence[TopicPartition]) -> None:
        """Read exactly ``partitions``; a new one starts at its beginning."""
        self._positions = {tp: self._positions.get(tp, self.broker._first(tp)) for tp in partitions}

    def assignment(self) -> set[TopicPartition]:
        """The partitions assigned."""
        return set(self._positions)

    async def seek_to_end(self, *partitions: TopicPartition) -> None:
        """Fetch only what ``partitions`` get from now on."""
        for tp in partitions:
            self.seek(tp, len(self.broker._log(tp.topic)[tp.partition]))

    async def offsets_for_times(self, times: dict[TopicPartition, int]) -> dict[TopicPartition, Any]:
        """The first record at or after each time, as ``(offset, timestamp)``; None past the last."""
        out: dict[TopicPartition, Any] = {}
        for tp, ms in times.items():
            found = next((r for r in self.broker._log(tp.topic)[tp.partition] if r is not None and r.timestamp >= ms),
                         None)
            out[tp] = OffsetAndTimestamp(found.offset, found.timestamp) if found is not None else None
        return out


class MemoryLagReader:
    """Lag as the double's broker has it: log end less the group's committed offset."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker

    async def start(self) -> None:
        """Nothing to connect."""

    async def stop(self) -> None:
        """Nothing to disconnect."""

    async def lag(self, group_id: str, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """End offset less committed offset, per partition."""
        committed = await self.committed(group_id, partitions)
        logs = {tp.topic: self.broker._log(tp.topic) for tp in partitions}
        return {tp: max(0, len(logs[tp.topic][tp.partition]) - (committed[tp] or 0)) for tp in partitions}

    async def committed(self, group_id: str, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
        """The group's committed offsets (None where it committed none)."""
        committed = self.broker.committed(group_id)
        return {tp: committed.get(tp) for tp in partitions}
