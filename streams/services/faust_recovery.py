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

from aiokafka import TopicPartition
from faust.tables import TableManager as _TableManager
from faust.tables.recovery import Recovery as _Recovery

__all__ = ["Recovery", "TableManager"]


class Recovery(_Recovery):
    """faust's recovery, with the end of it reordered (clear, seek, then resume) and its reading kept in place."""

    async def on_start(self) -> None:
        """Start as faust's does, and follow each of the consumer's seeks to committed offsets with our own."""
        await super().on_start()
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
