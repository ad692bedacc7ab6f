"""The consume-process-produce loop every scoreline role runs, with at-least-once commits."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from abc import ABC, abstractmethod
from collections import deque

from schemas import codec
from schemas import headers as H
from schemas.errors import ErrorCode, InvalidMessage
from schemas.messages import Stage
from streams.errors import PartitionRevoked
from streams.ops.metrics import ServiceMetrics
from streams.ops.tracing import trace_headers
from streams.topics import TopicLayout
from streams.transport.headers import headers_of
from streams.transport.kafka import KafkaTransport
from streams.transport.outbox import Outbox, Sent
from streams.transport.protocols import Batch, Consumer, Producer, Record, TopicPartition, Transport
from streams.transport.settings import KafkaSettings

__all__ = ["BatchService", "Batch", "BACKFILL_SUFFIX"]

BACKFILL_SUFFIX = ".backfill"
"""Topics whose names end so carry backfill traffic, served after live work."""

log = logging.getLogger(__name__)

MAX_UNACKED = 4
"""Batches a service may have sent and not yet seen acknowledged while it handles the next one."""


class BatchService(ABC):
    """Consumes batches, hands each to ``handle``, and commits only after its output is acknowledged.

    A crash between produce and commit replays the batch: results may repeat (same request id),
    but none is lost. ``handle`` must not raise for bad input; it dead-letters it instead.
    An unexpected failure rewinds to the batch's first offsets and tries again after a pause.

    It reaches Kafka only through ``transport`` (default: aiokafka with ``kafka``'s settings);
    :class:`~streams.transport.memory.MemoryTransport` runs the same loop in memory.
    """

    role: str = "service"
    stage: str = Stage.ROUTER
    pattern: str | None = None
    """Subscribe to every topic matching this regex instead of ``topics``."""

    def __init__(self, kafka: KafkaSettings, layout: TopicLayout, *, group_id: str, topics: list[str],
                 transport: Transport | None = None) -> None:
        self.kafka = kafka
        self.layout = layout
        self.group_id = group_id
        self.topics = topics
        self.transport: Transport = transport if transport is not None else KafkaTransport(kafka)
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        self.retry_pause_s = 1.0
        """How long a failed batch waits before it is replayed (the cause may be a broker moving leaders)."""
        self._task: asyncio.Task[None] | None = None
        self._committing: asyncio.Task[None] | None = None
        self._to_commit: dict[TopicPartition, int] = {}
        """Offsets acknowledged but not committed yet: the next commit's."""
        self._stopping = asyncio.Event()
        self._partitions: dict[str, int] = {}
        self._stopped_at: dict[TopicPartition, tuple[int, int]] = {}
        """Partitions whose commit stopped short of the batch's end for work held back: (end, committed)."""
        self._replay: list[Batch] = []
        """Batches to fetch again, oldest first: one failed, and every batch handled after it."""
        self._taken_to: dict[TopicPartition, int] = {}
        """The offset after the last record taken from each partition (for work in flight)."""
        self._committed_at: dict[TopicPartition, int] = {}
        """The offset this member last committed per partition, else the first it took there."""
        self.batches = 0
        self.records = 0
        self.dead_letters = 0
        self.metrics = ServiceMetrics(self)
        """Per-batch tallies for Prometheus; a Pipeline rebinds it to its registry."""

    async def __aenter__(self) -> BatchService:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Connect, join the group and start the loop in the background."""
        self.producer = self.transport.producer(self.role)
        await self.producer.start()
        self.consumer = self.transport.consumer(self.topics, group_id=self.group_id, role=self.role,
                                                pattern=self.pattern)
        await self.consumer.start()
        _quiet_collector()
        self._task = asyncio.create_task(self._run(), name=f"scoreline-{self.role}")

    async def stop(self) -> None:
        """Finish the batch in hand, commit it, and disconnect."""
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._committing is not None:
            await self._committing
        if self.consumer is not None:
            await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()

    async def wait_assigned(self, timeout: float = 30.0) -> None:
        """Return once the group gave this service partitions (for tests and the demo)."""
        deadline = time.monotonic() + timeout
        while not (self.consumer and self.consumer.assignment()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.role}: no partitions assigned within {timeout}s")
            await asyncio.sleep(0.05)

    async def partition_count(self, topic: str) -> int:
        """How many partitions ``topic`` has (asked once, then cached)."""
        count = self._partitions.get(topic)
        if count is None:
            assert self.producer is not None
            count = self._partitions[topic] = len(await self.producer.partitions_for(topic))
        return count

    async def reply_partition(self, reply_to: str, headers: dict[str, str]) -> int | None:
        """The partition of ``reply_to`` the client asked for (``scoreline-reply-partition``), if valid.

        An invalid ask falls back to keying by request id, so the reply still arrives.
        """
        raw = headers.get(H.REPLY_PARTITION)
        if raw is None or not raw.isdigit():
            return None
        partition = int(raw)
        return partition if partition < await self.partition_count(reply_to) else None

    def in_flight(self) -> int:
        """Records this member has taken from its partitions and not committed yet: work it has in hand.

        Queued for a model, in a model call, or waiting for its output's acknowledgement; what an
        autoscaler reads beside the lag (work waiting) to see how busy the role is.
        """
        if self.consumer is None:
            return 0
        owned = self.consumer.assignment()
        taken, committed = dict(self._taken_to), dict(self._committed_at)  # copies: a scrape may run on another loop
        return sum(max(0, end - committed.get(tp, end)) for tp, end in taken.items() if tp in owned)

    @property
    def failed(self) -> BaseException | None:
        """The exception that ended the loop, if one did."""
        if self._task is not None and self._task.done() and not self._task.cancelled():
            return self._task.exception()
        return None

    async def _run(self) -> None:
        """Poll, handle, send; the acknowledgements are awaited in the background, in order, while the next batch
        is polled and handled (at most :data:`MAX_UNACKED` batches waiting); each batch is committed once its
        output is acknowledged and every batch before it is committed-to. A batch whose output fails is replayed
        from its first offsets, with every batch handled after it."""
        assert self.consumer is not None and self.producer is not None
        acking: deque[asyncio.Task[None]] = deque()
        try:
            while not self._stopping.is_set():
                if self._replay:
                    await self._replay_failed(acking)
                    continue
                batch = await self._poll()
                if not batch and not self.held():
                    continue  # with work held back, an empty poll still lets ``handle`` finish it
                for tp, records in batch.items():
                    self._committed_at.setdefault(tp, records[0].offset)
                    self._taken_to[tp] = records[-1].offset + 1
                outbox: Outbox = Outbox(self.producer)
                began = time.perf_counter()
                try:
                    await self.handle(batch, outbox)
                    handled = time.perf_counter()
                    sent = await outbox.send()
                except Exception:
                    log.exception("%s: batch failed; rewinding to replay it", self.role)
                    self.metrics.batch_failed()
                    outbox.discard()  # the replay queues its output afresh
                    self._replay.append(batch)
                    continue
                acking.append(asyncio.create_task(self._acknowledge(
                    batch, outbox, sent, acking[-1] if acking else None, began, handled)))
                while acking and (acking[0].done() or len(acking) > MAX_UNACKED):
                    await acking.popleft()
        finally:
            # Stopping: the batches in hand are acknowledged and committed (or left to be replayed).
            await asyncio.gather(*acking, return_exceptions=True)

    async def _acknowledge(self, batch: Batch, outbox: Outbox, sent: Sent, previous: asyncio.Task[None] | None,
                           began: float, handled: float) -> None:
        """Once the batch before has been: wait for this batch's acknowledgements, then commit it (never raises)."""
        if previous is not None:
            await asyncio.wait([previous])
        if self._replay:
            self._replay.append(batch)  # an earlier batch failed: this one is replayed with it
            return
        try:
            await self._settle(batch, outbox, sent)
        except Exception:
            log.exception("%s: batch output failed; rewinding to replay it", self.role)
            self.metrics.batch_failed()
            self._replay.append(batch)
            return
        settled = time.perf_counter()
        self._commit_soon(batch)
        if batch:
            self.batches += 1
            self.records += sum(len(r) for r in batch.values())
            self.metrics.batch_done(batch, began, handled, settled)

    async def _replay_failed(self, acking: deque[asyncio.Task[None]]) -> None:
        """Once every batch in hand has settled or joined the replay: seek back to the first failed batch's
        offsets, pause, and let the loop fetch them again."""
        await asyncio.gather(*acking, return_exceptions=True)
        acking.clear()
        replay, self._replay = self._replay, []
        first: Batch = {}
        for batch in replay:  # the lowest offset per partition: batches join in the order they settle, not arrive
            for tp, records in batch.items():
                if tp not in first or records[0].offset < first[tp][0].offset:
                    first[tp] = records
        self._rewind(first)
        await asyncio.sleep(self.retry_pause_s)

    async def _poll(self) -> Batch:
        """The next batch, live work first: backfill only fills the room live leaves, a slice at a time.

        A live request that arrives while a batch is being handled waits for that batch only, so
        the slice bounds what backfill can add to live latency (``backfill_slice`` records).
        """
        consumer = self.consumer
        assert consumer is not None
        limit = self.kafka.fetch_max_records
        assigned = consumer.assignment()
        backfill = [tp for tp in assigned if tp.topic.endswith(BACKFILL_SUFFIX)]
        idle_ms = self._idle_ms()
        if not backfill:
            return await consumer.getmany(timeout_ms=idle_ms, max_records=limit)
        live = [tp for tp in assigned if not tp.topic.endswith(BACKFILL_SUFFIX)]
        batch = await consumer.getmany(*live, timeout_ms=0, max_records=limit) if live else {}
        taken = sum(len(records) for records in batch.values())
        if taken < limit:
            more = await consumer.getmany(*backfill, timeout_ms=0,
                                          max_records=min(limit - taken, self.kafka.backfill_slice))
            batch.update(more)
        if batch:
            return batch
        # Idle: wait for whatever comes first, but take backfill no faster than a slice at a time.
        return await consumer.getmany(timeout_ms=idle_ms, max_records=self.kafka.backfill_slice)

    async def _settle(self, batch: Batch, outbox: Outbox, sent: Sent) -> None:
        """Wait for every send; dead-letter the records whose output the broker refused."""
        failures = await outbox.acknowledged(sent)
        if not failures:
            return
        for record, exc in failures:
            if record is None:
                raise exc
            log.error("%s: output of %s:%s@%s refused: %r", self.role, record.topic, record.partition,
                      record.offset, exc, extra={"request_id": headers_of(record.headers).get(H.REQUEST_ID)})
            await self.dead_letter(outbox, record, InvalidMessage(ErrorCode.OUTPUT_REFUSED, f"output refused: {exc!r}"))
        # Dead letters must land too, or the batch is replayed.
        if await outbox.flush():
            raise RuntimeError("dead-letter topic refused records")

    async def dead_letter(self, outbox: Outbox, record: Record, exc: InvalidMessage) -> None:
        """Queue a dead-letter record holding the original bytes and the reason."""
        headers = headers_of(record.headers)
        letter = codec.dead_letter_for(
            exc, stage=self.stage, source_topic=record.topic, source_partition=record.partition,
            source_offset=record.offset, original=record.value or b"", headers=headers,
            ts_ms=int(time.time() * 1000),
        )
        key = letter.request_id.encode() if letter.request_id else None
        self.dead_letters += 1
        self.metrics.dead_letter(exc.code)
        await outbox.add(self.layout.deadletter, codec.encode(letter), key=key, headers=trace_headers(headers))

    def _rewind(self, batch: Batch) -> None:
        assert self.consumer is not None
        for tp, records in batch.items():
            self._taken_to[tp] = records[0].offset
            with contextlib.suppress(PartitionRevoked):  # revoked meanwhile: the new owner replays
                self.consumer.seek(tp, records[0].offset)

    def _idle_ms(self) -> int:
        """How long an empty poll waits: work held back is looked at again soon."""
        return 10 if self.held() else 100

    def held(self) -> dict[TopicPartition, int]:
        """The lowest offset per partition whose output is not settled yet: work ``handle`` held back for a
        later call (a worker's requests for a model still loading). Commits stop there, so a crash replays it."""
        return {}

    def _commit_soon(self, batch: Batch) -> None:
        """Commit ``batch`` (already acknowledged) in the background, after the commits before it.

        The next batch is fetched and handled during the commit's round trip. One commit is in flight
        at a time: the offsets of the batches handled meanwhile are merged into the next one (offsets
        are cumulative), so a busy service commits once a round trip, not once a batch.
        """
        offsets = {tp: records[-1].offset + 1 for tp, records in batch.items()}
        if self._stopped_at or self.held():
            offsets = self._hold_back(offsets)
        if not offsets:
            return
        self._to_commit.update(offsets)
        if self._committing is None or self._committing.done():
            self._committing = asyncio.create_task(self._commit_pending())

    async def _commit_pending(self) -> None:
        while self._to_commit:
            offsets, self._to_commit = self._to_commit, {}
            await self._commit(offsets)

    def _hold_back(self, offsets: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """``offsets``, none past the work held back; and the partitions a release lets go further."""
        assert self.consumer is not None
        held, owned = self.held(), self.consumer.assignment()
        stopped, self._stopped_at = self._stopped_at, {}
        # A partition this member lost is the new owner's to replay from the commit that stopped short.
        wanted = {tp: end for tp, (end, _) in stopped.items() if tp in owned}
        wanted.update(offsets)
        out = {}
        for tp, end in wanted.items():
            offset = min(end, held.get(tp, end))
            if offset < end:
                self._stopped_at[tp] = (end, offset)
            if tp in offsets or offset != stopped[tp][1]:
                out[tp] = offset
        return out

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit ``offsets``; never raises (a failure is logged, and the next commit covers it)."""
        assert self.consumer is not None
        try:
            await self.consumer.commit(offsets)
            self._committed_at.update(offsets)
        except PartitionRevoked as exc:
            # A rebalance took the partitions: their new owner replays from the last commit.
            log.warning("%s: commit after rebalance failed (%s); the batch will be replayed", self.role, exc)
        except Exception:
            # Offsets are cumulative: the next commit covers this batch; a crash before it replays it.
            log.exception("%s: commit failed; the next commit covers this batch", self.role)

    @abstractmethod
    async def handle(self, batch: Batch, outbox: Outbox) -> None:
        """Turn one batch into output records queued on ``outbox``."""


def _quiet_collector() -> None:
    """Keep Python's cyclic garbage collector off the long-lived heap and out of the batch loop.

    Models, facts and rules are loaded by now and live as long as the process: freezing them
    stops every full collection from rescanning them. A batch allocates thousands of
    short-lived containers (records, headers, dicts) that reference counting frees anyway;
    a higher first threshold stops the collector from running every 700 of them. Together
    about 15% less CPU per request in ``scoreline bench`` (docs/performance.md).
    """
    gc.freeze()
    if gc.get_threshold()[0] < _GC_FIRST_THRESHOLD:
        gc.set_threshold(_GC_FIRST_THRESHOLD, *gc.get_threshold()[1:])


_GC_FIRST_THRESHOLD = 10_000
