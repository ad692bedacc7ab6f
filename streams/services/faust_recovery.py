"""A faust table manager whose recovery does not drop the records it fetches on the way out.

faust-streaming 0.15.3 ends a table recovery (``Recovery.on_recovery_completed``,
``faust/tables/recovery.py``) in this order:

1. resume the stream partitions (the flow is already active: the changelog
   was just read through it, so the fetcher starts filling the agents' queues);
2. ``await consumer.perform_seek()`` (a coordinator round trip; more records
   arrive meanwhile);
3. ``app.flow_control.resume()``, which clears every agent queue.

The records queued in 1-2 are thrown away, and ``Consumer._drain_messages``
never delivers them again: it drops anything below a partition's read offset,
which has already moved past them. After a restart the comparator lost a
contiguous block of sides per partition this way (``docs/reliability.md``).
Upstream fixed the same ordering for apps without tables (faust-streaming
PR #217, PR #253), not this path.

A second way to the same loss: while the changelog is read, the stream
partitions are paused in faust only; aiokafka keeps prefetching them, and a
fetch for an active-partition set that has just become empty returns every
partition's records, which faust then skips as paused. Step 2 seeks back to the
committed offset, which repairs that, except for a partition with no committed
offset yet (a comparator killed before its first commit): it stays where it
is, past records never processed.

:class:`TableManager` swaps in a :class:`Recovery` that clears the queues
first, seeks every stream partition while it is still paused, in faust and in
aiokafka (the same empty-set fetch would otherwise take the records again from
the new position while the seek awaits the consumer thread), to its committed
offset, or without one to where ``consumer_auto_offset_reset`` says a new group
starts, and only then resumes them, so the first record fetched is the one at
the committed offset and nothing fetched is cleared. It goes through faust's own
extension point, ``faust.App(..., TableManager=table_manager(transport))``.

The changelog itself is not read through that consumer at all. faust reads it
there, with the stream partitions paused around it, and a fetch thrown away while
the flow is stopped (a rebalance stops it) left a changelog partition past records
never applied, so a recovery waited for them for good (a comparator taking over
its partner's partitions on a loaded machine did). :class:`Recovery` replays each
changelog partition it takes on with the transport's reader instead
(:class:`~streams.transport.follow.Follower`, the one "replay to the end" reader
of the rules, facts and repository), applies the records to the table as faust
would, and keeps the changelog partitions paused in faust's consumer, in faust
and in aiokafka. A partition kept from one assignment to the next is not read
again: the table already holds all of it, since only this process wrote to it and
its writes are flushed before a recovery starts.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

from faust.tables import TableManager as _TableManager
from faust.tables.recovery import RebalanceAgain, ServiceStopped
from faust.tables.recovery import Recovery as _Recovery
from faust.types import TP, Message
from mode import Service

from streams.transport.follow import Follower
from streams.transport.protocols import KafkaError, Record, TopicPartition, Transport

__all__ = ["Recovery", "TableManager", "table_manager"]

log = logging.getLogger(__name__)


class Recovery(_Recovery):
    """faust's recovery, restoring tables through the transport's reader and ending in the order above."""

    transport: Transport
    _follower: Follower | None = None
    _whole: frozenset = frozenset()
    """The changelog partitions whose every record is in the table (replayed, and kept since)."""
    _restoring: asyncio.Lock

    def revoke(self, tp: TP) -> None:
        """As faust's; a partition given up must be replayed whole if it comes back (others wrote to it meanwhile)."""
        super().revoke(tp)
        self._whole = self._whole - {tp}

    async def on_stop(self) -> None:
        """As faust's, and disconnect the changelog reader."""
        await super().on_stop()
        if self._follower is not None:
            await self._follower.stop()
            self._follower = None

    @Service.task
    async def _slurp_changelogs(self) -> None:
        """faust's reader of its changelog queue. Nothing should reach it (the changelog partitions stay paused in
        faust's consumer); whatever does is dropped, never blocking faust's delivery: the recovery reads it all."""
        queue = self.tables.changelog_queue
        while not self.should_stop:
            try:
                event = await asyncio.wait_for(queue.get(), timeout=1.0)
            except TimeoutError:
                continue
            message = event.message
            log.warning("changelog record %s:%s@%s reached faust's queue; dropped (the recovery reads the changelog "
                        "itself)", message.topic, message.partition, message.offset)

    @Service.task
    async def _restart_recovery(self) -> None:
        """On each assignment: restore the tables from their changelogs, then resume the streams."""
        while not self.should_stop:
            if await self.wait_for_stopped(self.signal_recovery_start):  # type: ignore[arg-type]
                self.signal_recovery_start.clear()
                break  # stopped
            self.signal_recovery_start.clear()
            generation_id = self._generation_id
            try:
                await self._wait(asyncio.sleep(self.recovery_delay))
                self._set_recovery_started()
                self.flush_buffers()
                producer = cast(Any, self.app)._producer
                if producer is not None:  # the table's own writes are all on the changelog before it is read
                    await self._wait(producer.flush(), timeout=self.app.conf.broker_request_timeout)
                await self._wait(self._restore(set(self.active_tps)))
                await self._wait(self.on_recovery_completed(generation_id))
            except RebalanceAgain:
                continue  # another assignment came: start over with it
            except ServiceStopped:
                break
            except KafkaError as exc:  # a partition no longer assigned (a rebalance under way), the reader cut off
                log.warning("Table recovery for generation %s failed, trying again: %r", generation_id, exc)
                await self.sleep(1.0)
                if not self.should_stop:
                    self.signal_recovery_start.set()  # the same assignment again, unless a newer one came

    async def _restore(self, changelogs: set[TP]) -> None:
        """Replay the changelog partitions the table does not hold whole yet, from their first record to their end."""
        # One replay at a time: faust cancels an interrupted one without waiting for it to end.
        async with self._restoring:
            await self._replay(changelogs)

    async def _replay(self, changelogs: set[TP]) -> None:
        consumer: Any = self.app.consumer
        if changelogs:  # faust pauses them in faust; in aiokafka too, so its fetcher does not read them for nothing
            consumer.pause_partitions(changelogs)
            await _in_aiokafka(consumer, "pause", changelogs)
        kept = self._whole & changelogs
        self._whole = kept  # until the rest is replayed: an interrupted replay starts over
        added = sorted(changelogs - kept)
        if not added:
            return
        follower = await self._changelog_follower()
        await follower.follow(())
        await follower.follow([TopicPartition(tp.topic, tp.partition) for tp in added])
        log.info("Replaying changelog partitions %s", ", ".join(f"{tp.topic}:{tp.partition}" for tp in added))
        applied = 0
        while not follower.caught_up:
            batch = await follower.poll(timeout_ms=500)
            for tp, records in batch.items():
                table = self.tp_to_table[TP(tp.topic, tp.partition)]
                events = [await table.changelog_topic.decode(_message(record), propagate=True) for record in records]
                for event in events:
                    await table.on_changelog_event(event)
                table.apply_changelog_batch(events)
                applied += len(events)
        await follower.follow(())  # nothing fetched between recoveries: the table takes its own writes
        self._whole = frozenset(changelogs)
        log.info("Replayed %d changelog records", applied)

    async def _changelog_follower(self) -> Follower:
        if self._follower is None:
            follower = Follower(self.transport.reader(f"{self.app.conf.id}-recovery"))
            await follower.start()
            self._follower = follower
        return self._follower

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        """As faust's, except the order of the last steps (see the module docstring)."""
        app: Any = self.app
        consumer = app.consumer
        self.log.info("Restore complete!")
        await app.on_rebalance_complete.send()
        self._set_recovery_ended()
        callbacks = [asyncio.ensure_future(table.on_recovery_completed(self.actives_for_table[table],
                                                                        self.standbys_for_table[table]))
                     for table in self.tables.values()]
        if callbacks:
            await asyncio.wait(callbacks)
        assignment = consumer.assignment()
        if app.consumer_generation_id != generation_id:
            self.log.warning("Recovery rebalancing again: generation %s, recovery started for %s",
                             app.consumer_generation_id, generation_id)
            return
        # Queues are cleared now, while the stream partitions are still paused: nothing of theirs is in them.
        app.flow_control.resume()
        consumer.resume_flow()
        streams = {tp for tp in assignment if not self._is_changelog_tp(tp)}
        if streams:
            # Paused in aiokafka too while they seek: faust's fetch of an empty active set would
            # otherwise take their records from the new position and skip them as paused.
            await _in_aiokafka(consumer, "pause", streams)
            self.log.info("Seek stream partitions to committed offsets.")
            await self._wait(self._seek_to_start(streams), timeout=app.conf.broker_request_timeout)
        # Only now can records arrive, from the committed offsets on, into queues nobody clears.
        self.log.dev("Resume stream partitions")
        consumer.resume_partitions(streams)
        if streams:
            await _in_aiokafka(consumer, "resume", streams)
        self.completed.set()
        await cast(Any, app)._fetcher.maybe_start()
        self.tables.on_actives_ready()
        if not app.assignor.assigned_standbys():
            self.tables.on_standbys_ready()
        app.on_rebalance_end()
        self.log.info("Worker ready")

    async def _seek_to_start(self, tps: set) -> None:
        """Seek each stream partition to its committed offset, or where a new group starts reading.

        faust's ``perform_seek`` leaves a partition without a committed offset where it is. But
        its position may already be past records nobody processed: while the changelog is read,
        the fetcher can ask aiokafka for the records of an emptied set of active partitions,
        which means all of them, and then discard those of the paused stream partitions.
        Seeking also resets faust's read offset, so the records are delivered again.
        """
        app: Any = self.app
        consumer = app.consumer
        committed = await consumer.seek_to_committed()
        consumer._committed_offset.update({tp: offset for tp, offset in committed.items() if offset})
        fresh = [tp for tp in tps if not committed.get(tp)]
        reset = consumer.earliest_offsets if app.conf.consumer_auto_offset_reset == "earliest" else consumer.highwaters
        starts = await reset(*fresh) if fresh else {}
        # Through the consumer's own thread: faust's Consumer.seek calls aiokafka's seek from this one,
        # racing the fetcher there (seen as a KeyError in Fetcher.fetched_records that stops the
        # comparator for good). seek_wait sets faust's read offsets as Consumer.seek does.
        positions = {tp: committed.get(tp) or starts[tp] for tp in tps}
        self.log.info("Stream partitions start at %s",
                      {f"{tp.topic}:{tp.partition}": offset for tp, offset in sorted(positions.items())})
        await consumer._thread.seek_wait(positions)


async def _in_aiokafka(consumer: Any, action: str, tps: set) -> None:
    """``pause`` or ``resume`` ``tps`` in faust's aiokafka consumer, on the thread that owns it."""
    thread = consumer._thread

    async def call(aio: Any) -> None:
        getattr(aio, action)(*(TopicPartition(tp.topic, tp.partition) for tp in tps))  # aiokafka's own type

    await thread.call_thread(call, thread._ensure_consumer())


class TableManager(_TableManager):
    """faust's table manager, recovering with :class:`Recovery` through ``transport``."""

    transport: Transport

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            recovery = Recovery(self.app, self, beacon=self.beacon, loop=self.loop)
            recovery.transport, recovery._restoring = self.transport, asyncio.Lock()
            self._recovery = recovery
        return cast(Recovery, self._recovery)


def table_manager(transport: Transport) -> type[TableManager]:
    """The :class:`TableManager` to give ``faust.App(TableManager=...)``: changelogs read through ``transport``."""
    return cast(type[TableManager], type("TableManager", (TableManager,), {"transport": transport}))


def _message(record: Record) -> Message:
    """A changelog record as faust's consumer would hand it on."""
    return Message(record.topic, record.partition, record.offset, record.timestamp / 1000.0,
                   record.timestamp_type, list(record.headers or ()), record.key, record.value, record.checksum,
                   record.serialized_key_size, record.serialized_value_size,
                   tp=TP(record.topic, record.partition))
