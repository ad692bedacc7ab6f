"""Compacted topics read the one way scoreline reads them: replay from the beginning to the end, then follow.

The rules, the rollouts, the facts and the model repository are compacted topics whose whole
content is the state: a reader replays each partition from its first record to the end it has
when the reader takes it on (then it is *caught up*: it holds the state as of that moment), and
then follows what comes after. :class:`CatchUp` is that bookkeeping over any consumer that can
seek and tell positions and end offsets (a :class:`~streams.transport.protocols.Reader`, or the
rollout controller's group member); :class:`Follower` is a reader of partitions assigned by hand
with it built in; :func:`read_to_end` replays and stops.

Offsets, order and compaction are Kafka's, so the same code runs on the in-memory transport
(:class:`~streams.transport.memory.MemoryReader`), which compacts when a test says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from streams.transport.protocols import Batch, Reader, Record, TopicPartition

__all__ = ["CatchUp", "Follower", "read_to_end"]


class _Seekable(Protocol):
    async def seek_to_beginning(self, *partitions: TopicPartition) -> None: ...

    async def position(self, partition: TopicPartition) -> int: ...

    async def end_offsets(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]: ...


class CatchUp:
    """Which partitions have been replayed to the end they had when their replay began."""

    def __init__(self, consumer: _Seekable) -> None:
        self.consumer = consumer
        self.targets: dict[TopicPartition, int] = {}
        """Partition -> the end offset it must be read to; a partition leaves once it is."""

    async def replay(self, partitions: Sequence[TopicPartition], *, from_beginning: bool = True) -> None:
        """Start replaying ``partitions`` (from their beginning unless the caller has positioned them)."""
        if not partitions:
            return
        if from_beginning:
            await self.consumer.seek_to_beginning(*partitions)
        self.targets.update(await self.consumer.end_offsets(list(partitions)))

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Stop waiting for ``partitions`` (no longer read)."""
        for tp in partitions:
            self.targets.pop(tp, None)

    async def done(self) -> bool:
        """Whether every partition being replayed has been read to its end (checks positions now)."""
        for tp, end in list(self.targets.items()):
            if await self.consumer.position(tp) >= end:
                del self.targets[tp]
        return not self.targets


class Follower:
    """Partitions assigned by hand, each replayed to its end, then followed (see the module doc).

    ``follow(partitions)`` sets what is read: partitions kept go on from where they are, new ones
    are replayed from their beginning (or from ``start_at``), dropped ones are forgotten.
    ``poll()`` returns the next records; ``caught_up`` says whether every partition has been read
    to the end it had when it was added.
    """

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self.catch_up = CatchUp(reader)
        self._caught_up = True

    async def start(self) -> None:
        """Connect."""
        await self.reader.start()

    async def stop(self) -> None:
        """Disconnect."""
        await self.reader.stop()

    async def __aenter__(self) -> Follower:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def caught_up(self) -> bool:
        """Whether every partition has been read to the end it had when it was added (as of the last poll)."""
        return self._caught_up

    def assignment(self) -> set[TopicPartition]:
        """The partitions read."""
        return self.reader.assignment()

    async def follow(self, partitions: Iterable[TopicPartition], *,
                     start_at: Mapping[TopicPartition, int] | None = None) -> set[TopicPartition]:
        """Read exactly ``partitions``; return those dropped. New ones replay from ``start_at`` or the beginning."""
        wanted = set(partitions)
        current = self.reader.assignment()
        if wanted == current:
            return set()
        # Assigning replaces the assignment and forgets positions: keep those of the partitions kept.
        kept = {tp: await self.reader.position(tp) for tp in current & wanted}
        self.reader.assign(sorted(wanted))
        for tp, offset in kept.items():
            self.reader.seek(tp, offset)
        added = sorted(wanted - current)
        start_at = start_at or {}
        resumed = [tp for tp in added if tp in start_at]
        for tp in resumed:
            self.reader.seek(tp, start_at[tp])
        await self.catch_up.replay([tp for tp in added if tp not in resumed])
        await self.catch_up.replay(resumed, from_beginning=False)
        dropped = current - wanted
        self.catch_up.forget(dropped)
        self._caught_up = await self.catch_up.done()
        return dropped

    async def poll(self, timeout_ms: int = 100, max_records: int | None = None) -> Batch:
        """The next records of the partitions read (waiting up to ``timeout_ms`` for some)."""
        if not self.reader.assignment():
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        batch = await self.reader.getmany(timeout_ms=timeout_ms, max_records=max_records)
        if not self._caught_up:
            self._caught_up = await self.catch_up.done()
        return batch


async def read_to_end(reader: Reader, partitions: Sequence[TopicPartition], *, timeout: float,
                      start_at: Mapping[TopicPartition, int] | None = None) -> list[Record]:
    """Every record of ``partitions`` from their beginning (or ``start_at``) to the end they have now, in
    partition order; ``reader`` must be started.

    Raises:
        TimeoutError: the end was not reached within ``timeout`` seconds.
    """
    follower = Follower(reader)
    await follower.follow(partitions, start_at=start_at)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    records: list[Record] = []
    while not follower.caught_up:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise TimeoutError(f"could not read {sorted({tp.topic for tp in partitions})} to the end "
                               f"within {timeout:.0f}s")
        batch = await follower.poll(timeout_ms=int(min(remaining, 0.5) * 1000))
        for tp in sorted(batch):
            records.extend(batch[tp])
    return records
