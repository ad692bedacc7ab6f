"""Following the rules topic: the newest valid published version, kept in force in a :class:`RulesHolder`."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from routing import Rules, RulesError
from streams.rules.holder import RulesHolder
from streams.rules.log import LATEST_KEY, RulesRecord, decode_record, log_partitions, quietly
from streams.topics import TopicLayout
from streams.transport.follow import Follower
from streams.transport.kafka import KafkaTransport
from streams.transport.protocols import KafkaError, Record, TopicPartition, Transport
from streams.transport.settings import KafkaSettings

__all__ = ["RulesWatcher"]

# The rules lifecycle's log lines (publish, skip, cut off) share the name of streams.rules.publisher,
# so operators filter them by one name.
log = logging.getLogger("streams.rules.publisher")


class RulesWatcher:
    """Follows the rules topic in the background and keeps a :class:`RulesHolder` on its newest valid version.

    No consumer group: every process reads the whole (small, compacted) topic from the
    beginning, then follows it. Until a valid ``rules`` record arrives the holder keeps the
    rules it was built with (the local fallback). While the topic cannot be reached the
    holder keeps the last good version, and the log says so. Records are read committed, so
    an aborted publish is never seen; a record whose rules fail validation is logged and
    skipped; a record not newer than the version in force is skipped.
    """

    def __init__(self, kafka: KafkaSettings, layout: TopicLayout, holder: RulesHolder, *,
                 catch_up_timeout: float = 15.0, check_interval: float = 15.0, retry_after: float = 2.0,
                 transport: Transport | None = None) -> None:
        self.kafka = kafka
        self.transport = transport if transport is not None else KafkaTransport(kafka)
        self.topic = layout.rules
        self.holder = holder
        self.catch_up_timeout = catch_up_timeout
        self.check_interval = check_interval
        self.retry_after = retry_after
        self.topic_version: int | None = None
        "Version last put in force from the topic (None while the fallback is in force)."
        self.skipped = 0
        "Records skipped as unreadable, invalid or not newer."
        self._pending: tuple[Rules, RulesRecord] | None = None
        self._next: dict[TopicPartition, int] = {}
        self._caught_up = asyncio.Event()
        self._changed = asyncio.Event()
        self._unreachable = False
        self._follower: Follower | None = None
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> RulesWatcher:
        await self.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.stop()

    @property
    def caught_up(self) -> bool:
        """Whether the topic has been read to the end it had when the watcher started."""
        return self._caught_up.is_set()

    async def start(self) -> bool:
        """Start following; return True once caught up, False after ``catch_up_timeout``.

        On False the fallback (or last good) rules stay in force and following goes on in
        the background: a version read later is put in force then.
        """
        self._task = asyncio.create_task(self._follow(), name=f"scoreline-rules-watcher-{self.topic}")
        try:
            await asyncio.wait_for(asyncio.shield(self._caught_up.wait()), self.catch_up_timeout)
        except TimeoutError:
            log.warning("rules topic %s not read to its end within %.0fs; serving %s rules version %s until it is",
                        self.topic, self.catch_up_timeout, self._which(), self.holder.version)
            return False
        return True

    async def stop(self) -> None:
        """Stop following; the rules in force stay in force."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._close()

    async def wait_for_version(self, version: int, timeout: float) -> bool:
        """Wait until a topic version >= ``version`` is in force, or ``timeout`` passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (self.topic_version or 0) < version:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return True

    def _which(self) -> str:
        return "fallback" if self.topic_version is None else "last good"

    async def _follow(self) -> None:
        while True:
            try:
                await self._connect()
                await self._read()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: keep the rules in force, reconnect after a pause
                self._report_unreachable(exc)
                await self._close()
                await asyncio.sleep(self.retry_after)

    async def _connect(self) -> None:
        self._follower = follower = Follower(self.transport.reader("rules-watcher", read_committed=True))
        await asyncio.wait_for(follower.start(), 10)
        tps = await log_partitions(follower.reader, self.topic, timeout=10)
        if tps is None:
            raise LookupError(f"topic {self.topic} does not exist")
        await follower.follow(tps, start_at=self._next)  # reconnecting: carry on where we were

    async def _read(self) -> None:
        follower = self._follower
        assert follower is not None
        tps = sorted(follower.assignment())
        self._reachable()
        loop = asyncio.get_running_loop()
        next_check = loop.time() + self.check_interval
        while True:
            if not self._caught_up.is_set() and follower.caught_up:
                self._catch_up()
            batch = await follower.poll(timeout_ms=500)
            for tp, records in batch.items():
                for record in records:
                    self._take(record)
                    self._next[tp] = record.offset + 1
            if loop.time() >= next_check:
                # Kafka clients reconnect on their own and a fetch to a dead broker just returns
                # nothing, so ask for the end offsets to learn (and log) whether we are cut off.
                next_check = loop.time() + self.check_interval
                try:
                    await asyncio.wait_for(follower.reader.end_offsets(tps), 10)
                except (TimeoutError, KafkaError, OSError) as exc:
                    self._report_unreachable(exc)
                else:
                    self._reachable()

    def _take(self, record: Record) -> None:
        key = record.key.decode("utf-8", "replace") if record.key is not None else None
        if key != LATEST_KEY:
            return  # per-version keys are history, read by the publisher
        where = f"{self.topic}@{record.offset}"
        try:
            envelope = decode_record(record.value)
            rules = envelope.rules()
        except RulesError as exc:
            self.skipped += 1
            log.error("rules record %s skipped, %s; %s rules version %s stays in force", where, exc,
                      self._which(), self.holder.version)
            return
        newest = self._pending[0].version if self._pending else (self.topic_version or 0)
        if rules.version <= newest:
            self.skipped += 1
            log.warning("rules record %s skipped: version %s is not newer than version %s", where,
                        rules.version, newest)
            return
        self._pending = (rules, envelope)
        if self._caught_up.is_set():
            self._apply()

    def _catch_up(self) -> None:
        # While catching up only the newest valid version matters: put just that one in force.
        if self._pending is not None:
            self._apply()
        else:
            log.info("rules topic %s holds no valid published rules; serving fallback rules version %s",
                     self.topic, self.holder.version)
        self._caught_up.set()

    def _apply(self) -> None:
        assert self._pending is not None
        rules, envelope = self._pending
        self._pending = None
        self.holder.replace(rules, source=f"{self.topic} (published by {envelope.published_by})")
        self.topic_version = rules.version
        self._changed.set()

    def _report_unreachable(self, exc: BaseException) -> None:
        if not self._unreachable:
            log.warning("cannot reach rules topic %s (%r); still serving %s rules version %s", self.topic, exc,
                        self._which(), self.holder.version)
        self._unreachable = True

    def _reachable(self) -> None:
        if self._unreachable:
            log.warning("rules topic %s reachable again; following it from offset(s) %s", self.topic,
                        {tp.partition: o for tp, o in self._next.items()} or "start")
        self._unreachable = False

    async def _close(self) -> None:
        if self._follower is not None:
            follower, self._follower = self._follower, None
            await quietly(follower.stop())
