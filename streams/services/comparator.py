"""The comparator role: joins primary and shadow sides into comparisons, as a faust app.

Design (see ``docs/shadow.md`` for the analyst's side):

* One agent reads ``shadow-results`` (keyed by request id) and a small
  ``<app id>-ticks`` topic with the same partition count, so both are
  co-partitioned with the ``pairs`` table. The table (``memory://`` store,
  restored from its changelog topic on restart) holds one
  :data:`streams.services.pairing.Entry` per request id.
* A side completes pairs as soon as its partner is there: one
  :class:`~schemas.messages.Comparison` per (request, shadow model), keyed by
  request id, to ``shadow-comparisons``.
* An ``@app.timer`` writes one tick per partition every ``tick_s``. The agent
  handles a tick inside the stream, on that partition, so table writes land
  on the right changelog partition: entries older than the window are closed
  with ``timed_out`` comparisons; closed entries older than the retention are
  deleted. Ticks rather than table writes from the timer itself, because
  faust only lets a stream event modify a table.

Guarantee: **at-least-once**, kill -9 included. faust 0.15's table recovery
drops the records it fetches while it finishes; the app runs with
:class:`streams.services.faust_recovery.TableManager`, whose recovery does not
(``docs/reliability.md``, "Found"), and replays the table's changelog with the
transport's reader (:class:`streams.transport.follow.Follower`). An event (a side or a tick)
counts as processed -- faust acks it, so its offset becomes committable --
only once everything it caused is acknowledged by the broker: first its
comparisons, then its table writes on the changelog (:func:`_pairs_table`
keeps their futures). faust's own pre-commit ``producer.flush()`` is not enough
for that: ``ProducerBuffer.flush_atmost`` gives up after 0.1 s without a
message handed on, and a message its sender task has taken off the queue
but not yet given to aiokafka counts as flushed; after a ``kill -9`` the
restored table could lack sides whose offsets were committed. A crash
between the comparison's acknowledgement and the table write replays the
side and publishes the same comparison again: byte-identical (``ts_ms`` is
the later side's, not the clock's). Readers that need exactly one per pair
dedupe on ``(request_id, shadow_model)``, as ``scoreline shadow report`` does.

Timeouts follow the stream, not only the clock: while a partition has a
backlog, a tick expires entries by the newest side seen on it, so pairs whose
partner is still in the backlog (after a restart or an outage longer than the
window) are compared, not timed out.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from typing import Any

import orjson

from schemas import codec
from schemas.errors import InvalidMessage
from streams.services import pairing
from streams.topics import TopicLayout, TopicSpec
from streams.transport.admin import ensure_topics, wait_for_coordinator
from streams.transport.kafka import KafkaTransport
from streams.transport.protocols import TopicPartition, Transport
from streams.transport.settings import KafkaSettings

__all__ = ["Comparator", "DEFAULT_WINDOW_S"]

log = logging.getLogger(__name__)

DEFAULT_WINDOW_S = float(os.environ.get("SCORELINE_COMPARATOR_WINDOW_S", "60"))
"Seconds a side waits for its partner before a ``timed_out`` comparison (``SCORELINE_COMPARATOR_WINDOW_S``)."


class Comparator:
    """The comparator role, with the start/stop/wait_assigned surface of the other roles."""

    role = "comparator"

    def __init__(self, kafka: KafkaSettings, layout: TopicLayout, *, app_id: str | None = None,
                 window_s: float = DEFAULT_WINDOW_S, retention_s: float | None = None,
                 tick_s: float | None = None, drain_s: float = 30.0, transport: Transport | None = None) -> None:
        self.kafka = kafka
        self.transport = transport if transport is not None else KafkaTransport(kafka)
        """Reads the table's changelog on recovery and the group's offsets (faust's app has its own clients)."""
        self.layout = layout
        self.app_id = app_id or f"{layout.prefix}comparator"
        self.window_ms = int(window_s * 1000)
        # Closed entries outlive the window long enough to catch replays after a restart.
        self.retention_ms = int((retention_s if retention_s is not None else max(10 * window_s, 600)) * 1000)
        self.tick_s = tick_s if tick_s is not None else min(max(window_s / 4, 0.5), 10.0)
        self.ticks_topic = f"{self.app_id}-ticks"
        self.drain_s = drain_s
        self._next: dict[int, int] = {}
        self._first: dict[int, int] = {}
        self._seen_ms: dict[int, int] = {}
        self.app: Any = None
        self._datadir: tempfile.TemporaryDirectory | None = None
        """faust's data directory (it makes one even for memory tables): a temporary one, not the working directory."""
        self._crashed: BaseException | None = None
        self.batches = 0
        self.records = 0
        self.dead_letters = 0
        self.comparisons = 0
        self.ignored = 0
        self._replicas = 1

    async def __aenter__(self) -> Comparator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.stop()

    async def start(self) -> None:
        """Create the tick topic, build the faust app and start it (table recovery runs in the background)."""
        partitions, replicas = await _topic_shape(self.kafka, self.layout.shadow_results)
        # faust's own topics (the table's changelog) as replicated as the topic it reads.
        self._replicas = self.layout.replication_factor or replicas
        await ensure_topics(self.kafka.bootstrap, [TopicSpec(self.ticks_topic, partitions,
                                                             (("retention.ms", "3600000"),))],
                            replication_factor=self.layout.replication_factor, **self.kafka.security)
        self._next = await self._start_positions()
        self._datadir = tempfile.TemporaryDirectory(prefix=f"{self.app_id}-")
        self.app = self._build(partitions)
        await self.app.start()

    async def stop(self) -> None:
        """Catch up with the sides written so far (at most ``drain_s``), then stop the app.

        Whatever is left is committed as far as processed and replayed on the next start.
        """
        if self.app is not None:
            if self._crashed is None and self.drain_s > 0:
                await self._drain()
            await self.app.stop()
            self.app = None
        if self._datadir is not None:
            self._datadir.cleanup()
            self._datadir = None

    async def wait_assigned(self, timeout: float = 60.0) -> None:
        """Return once partitions are assigned and the table is restored from its changelog."""
        deadline = time.monotonic() + timeout
        while True:
            app = self.app
            if app is not None and app.consumer.assignment() and not app.rebalancing \
                    and app.tables.recovery.completed.is_set():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"comparator: not ready within {timeout}s")
            await asyncio.sleep(0.1)

    async def _start_positions(self) -> dict[int, int]:
        """Where each shadow-results partition resumes: the group's committed offset, else the log start."""
        await wait_for_coordinator(self.kafka, self.app_id)  # committed offsets come from the coordinator
        partitions, _ = await _topic_shape(self.kafka, self.layout.shadow_results)
        parts = [TopicPartition(self.layout.shadow_results, p) for p in range(partitions)]
        offsets, reader = self.transport.lag_reader("comparator-start"), self.transport.reader("comparator-start")
        await offsets.start()
        await reader.start()
        try:
            committed = await offsets.committed(self.app_id, parts)
            reader.assign(parts)
            await reader.seek_to_beginning(*parts)
            positions = {tp.partition: committed[tp] or await reader.position(tp) for tp in parts}
            log.info("comparator %s resumes %s at %s", self.app_id, self.layout.shadow_results, positions)
            return positions
        finally:
            await reader.stop()
            await offsets.stop()

    async def _drain(self) -> None:
        """Wait until every assigned shadow-results partition is processed up to its end as of now."""
        tps = [TopicPartition(tp.topic, tp.partition) for tp in self.app.consumer.assignment()
               if tp.topic == self.layout.shadow_results]
        if not tps:
            return
        offsets, reader = self.transport.lag_reader("comparator-drain"), self.transport.reader("comparator-drain")
        await offsets.start()
        await reader.start()
        try:
            ends = await reader.end_offsets(tps)
            done = await offsets.committed(self.app_id, tps)
            committed = {tp.partition: offset or 0 for tp, offset in done.items()}
        finally:
            await reader.stop()
            await offsets.stop()
        deadline = time.monotonic() + self.drain_s
        while any(max(self._next.get(tp.partition, 0), committed[tp.partition]) < end for tp, end in ends.items()):
            if time.monotonic() > deadline or self._crashed is not None:
                log.warning("comparator: stopping with sides still unprocessed; the next start picks them up")
                return
            await asyncio.sleep(0.05)

    @property
    def failed(self) -> BaseException | None:
        """The exception that crashed the app, if one did."""
        return self._crashed

    def _build(self, partitions: int) -> Any:
        import faust

        from streams.services.faust_recovery import table_manager

        datadir = self._datadir
        assert datadir is not None  # made by start() before the app is built
        app = faust.App(
            self.app_id,
            broker=f"kafka://{self.kafka.bootstrap}",
            broker_credentials=self.kafka.faust_credentials(),  # SASL/SSL like every other role
            store="memory://",
            datadir=datadir.name,
            # Recovery that reads the changelog through the transport and drops no fetched side
            # (streams/services/faust_recovery.py).
            TableManager=table_manager(self.transport),
            web_enabled=False,
            topic_partitions=partitions,
            topic_replication_factor=self._replicas,
            consumer_auto_offset_reset="earliest",
            table_standby_replicas=0,
            broker_session_timeout=10,
            broker_heartbeat_interval=1,
            broker_rebalance_timeout=20,
            broker_commit_interval=1.0,
        )
        source = app.topic(self.layout.shadow_results, self.ticks_topic, key_serializer="raw",
                           value_serializer="raw")
        sink = app.topic(self.layout.shadow_comparisons, key_serializer="raw", value_serializer="raw")
        ticks = app.topic(self.ticks_topic, key_serializer="raw", value_serializer="raw")
        pairs = app.tables.add(_pairs_table(app, "pairs", partitions))

        async def publish(comparisons: list) -> None:
            futures = [await sink.send(key=c.request_id.encode(), value=codec.encode(c), force=True)
                       for c in comparisons]
            # Acknowledged before the table says "done": a crash in between repeats, never loses.
            await asyncio.gather(*futures)
            self.comparisons += len(comparisons)

        @app.agent(source)
        async def join(stream):  # noqa: ANN001 - faust's stream type
            # No automatic acks: faust acks an event when the next one is asked for, even when
            # processing raised; here an event is acked only once its writes are acknowledged.
            async for event in stream.noack().events():
                message = event.message
                try:
                    if message.topic == self.ticks_topic:
                        await self._on_tick(pairs, message.partition, int(event.value), publish)
                    else:
                        await self._on_side(pairs, message, event.value, publish)
                    await pairs.acknowledged()
                except Exception as exc:  # noqa: BLE001 - anything else is a bug: stop, replay on restart
                    self._crashed = exc
                    raise
                if message.topic != self.ticks_topic:
                    if message.partition not in self._first:
                        self._first[message.partition] = message.offset
                        log.info("comparator: first side read on %s:%s at offset %s", message.topic,
                                 message.partition, message.offset)
                    self._next[message.partition] = message.offset + 1
                event.ack()
                self.records += 1
                self.batches += 1

        @app.timer(self.tick_s)
        async def tick() -> None:
            now = str(int(time.time() * 1000)).encode()
            for partition in range(partitions):
                await ticks.send(value=now, partition=partition)

        return app

    async def _on_side(self, pairs: Any, message: Any, value: bytes, publish) -> None:
        try:
            body = orjson.loads(value)
            side = codec.decode_shadow_result(value)
        except (orjson.JSONDecodeError, InvalidMessage) as exc:
            # Not ours to repair (the workers own this topic); counted and logged, never retried.
            self.dead_letters += 1
            log.warning("comparator: skipping %s:%s@%s: %s", message.topic, message.partition, message.offset, exc)
            return
        self._seen_ms[message.partition] = max(self._seen_ms.get(message.partition, 0), side.ts_ms)
        entry = pairs.get(side.request_id)
        new, comparisons = pairing.absorb(entry, side, body, partition=message.partition)
        if comparisons:
            await publish(comparisons)
        if new is entry:
            self.ignored += 1
        else:
            pairs[side.request_id] = new

    async def _on_tick(self, pairs: Any, partition: int, now_ms: int, publish) -> None:
        now_ms = self._stream_clock(partition, now_ms)
        for request_id, entry in list(pairs.items()):
            if entry is None or entry["p"] != partition:
                continue
            new, comparisons = pairing.expire(entry, now_ms, window_ms=self.window_ms,
                                              retention_ms=self.retention_ms)
            if comparisons:
                await publish(comparisons)
            if new is None:
                del pairs[request_id]
            elif new is not entry:
                pairs[request_id] = new

    def _stream_clock(self, partition: int, tick_ms: int) -> int:
        """The time a tick on ``partition`` may expire entries by.

        The tick's wall clock once the partition is caught up; while sides are
        still waiting to be read, the newest side read so far, because a
        partner in the backlog has not had its chance yet.
        """
        from faust.types import TP

        tp = TP(self.layout.shadow_results, partition)
        consumer = self.app.consumer
        # aiokafka asserts the partition is assigned; during a rebalance it may not be: then wait.
        highwater = consumer.highwater(tp) if tp in consumer.assignment() else None
        if highwater is not None and self._next.get(partition, 0) >= highwater:
            return tick_ms
        return min(tick_ms, self._seen_ms.get(partition, 0))


def _pairs_table(app: Any, name: str, partitions: int) -> Any:
    """A faust table whose changelog writes can be awaited (:meth:`acknowledged`).

    faust sends changelog records through its producer buffer and offers no
    future for a ``table[key] = value``; this subclass keeps those futures.
    """
    import faust

    class Pairs(faust.Table):
        unacked: list

        def send_changelog(self, *args: Any, **kwargs: Any) -> Any:
            fut = super().send_changelog(*args, **kwargs)
            self.unacked.append(fut)
            return fut

        async def acknowledged(self) -> None:
            """Wait until every changelog write made so far is acknowledged by the broker."""
            while self.unacked:
                pending, self.unacked = self.unacked, []
                await asyncio.gather(*pending)

    table = Pairs(app, name=name, partitions=partitions, beacon=app.tables.beacon)
    table.unacked = []
    return table



async def _topic_shape(kafka: KafkaSettings, topic: str) -> tuple[int, int]:
    """``topic``'s partition count and replication factor."""
    admin = kafka.admin()
    await admin.start()
    try:
        for _ in range(50):  # a topic created a moment ago may not be in the metadata yet
            (described,) = await admin.describe_topics([topic])
            if not described["error_code"] and described["partitions"]:
                return len(described["partitions"]), len(described["partitions"][0]["replicas"])
            await asyncio.sleep(0.1)
        raise LookupError(f"topic {topic} does not exist")
    finally:
        await admin.close()
