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
extension point, ``faust.App(..., TableManager=TableManager)``.

A third way, to a recovery that never ends: a fetch that returns while the flow
is stopped (a rebalance stops it, the recovery resumes it) is thrown away, and
faust's consumer then seeks every partition back to its committed offset
(``Consumer.perform_seek``). A changelog partition has none, so it stays past
the records thrown away. When that fetch held the changelog partition the
recovery had just sought to the start of, the rest of it never comes, and the
recovery waits for it for good while the comparator compares nothing (seen
when a comparator took over its partner's partitions on a loaded machine).
:class:`Recovery` follows every such seek with its own: each changelog
partition it is reading goes back to where its reading stands.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from faust.tables import TableManager as _TableManager
from faust.tables.recovery import Recovery as _Recovery

from streams.transport.protocols import TopicPartition

__all__ = ["Recovery", "TableManager"]


class Recovery(_Recovery):
    """faust's recovery, with the end of it reordered (clear, seek, then resume) and its reading kept in place."""

    _seeks_guarded = False

    def _set_recovery_started(self) -> None:
        """As faust's; the first time, also follow each of the consumer's seeks to committed offsets with ours."""
        super()._set_recovery_started()
        if not self._seeks_guarded:  # here, not at start: by the first recovery the consumer is the app's own
            self._seeks_guarded = True
            consumer: Any = self.app.consumer
            seek_to_committed = consumer.perform_seek

            async def perform_seek() -> None:
                await seek_to_committed()
                await self._keep_reading_in_place()

            consumer.perform_seek = perform_seek  # faust's only hook here is the method; getmany looks it up per call

    async def _keep_reading_in_place(self) -> None:
        """While recovering, seek each changelog partition being read back to where its reading stands.

        faust's seek to committed offsets leaves a changelog partition (never committed) past the
        records of a fetch that was just thrown away; the offsets are the recovery's own (the last
        record read, or where the reading starts), sought as the recovery itself seeks them.
        """
        if not self.in_recovery:
            return
        consumer: Any = self.app.consumer
        reading = self.active_tps & consumer.assignment()
        # As faust's _seek_offsets: the last record read is read again; none read yet (-1, or no entry) is the start.
        positions = {tp: max(self.active_offsets.get(tp) or 0, 0) for tp in reading}
        if positions:
            self.log.info("Changelog partitions back to where the recovery read: %s",
                          {f"{tp.topic}:{tp.partition}": offset for tp, offset in sorted(positions.items())})
            await consumer.seek_wait(positions)


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
    """faust's table manager, recovering with :class:`Recovery`."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = Recovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return cast(Recovery, self._recovery)
