"""The rules lifecycle on Kafka: publishing versions to the compacted rules topic, and following it.

The rules topic (``<prefix>rules``, one partition, ``cleanup.policy=compact``) holds, per
published version ``N``, two records with the same value:

- key ``rules.v<N>`` keeps version ``N`` for ``rules show --version N`` and ``rules rollback``
  (compaction keeps the last record of every key, so one key per version keeps the history);
- key ``rules`` holds the latest version: the one routers follow.

The value is the JSON envelope ``{"version": N, "published_at_ms": .., "published_by": ..,
"rules": <document>}``. :class:`RulesPublisher` validates a document, reads the topic to its
end, and writes version (highest seen) + 1 as one Kafka transaction, so readers never see one
key without the other and two publishers racing cannot both publish the same version: the
later one to start fences the earlier, which fails with :class:`RulesConflict` and writes
nothing. :class:`RulesWatcher` reads the topic from the beginning without a consumer group,
validates every ``rules`` record and puts the newest valid one in force in a
:class:`~streams.rules_source.RulesHolder`; an invalid record is logged and skipped, so a bad
record never replaces a good version.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import socket
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced

from routing import Rules, RulesError, parse_rules
from schemas.errors import ScorelineError
from streams.errors import KafkaUnavailable
from streams.kafka import KafkaSettings
from streams.rules_source import RulesHolder
from streams.topics import TopicLayout, TopicSpec, ensure_topics

__all__ = [
    "LATEST_KEY",
    "Published",
    "RulesConflict",
    "RulesLog",
    "RulesPublisher",
    "RulesRecord",
    "RulesWatcher",
    "UnknownRulesVersion",
    "decode_record",
    "encode_record",
    "version_key",
]

log = logging.getLogger(__name__)

LATEST_KEY = "rules"
"Key of the record holding the latest version: what routers follow."
_VERSION_KEY_PREFIX = "rules.v"
# Every record goes to partition 0: the latest and the per-version keys must share one
# ordered log, whatever partitioner a topic with more partitions would apply.
_PARTITION = 0


def version_key(version: int) -> str:
    """The key that keeps one version on the compacted topic (``rules.v<N>``)."""
    return f"{_VERSION_KEY_PREFIX}{version}"


class UnknownRulesVersion(ScorelineError):
    """The rules topic holds no such version (never published, or not a valid record)."""

    code = "unknown_rules_version"


class RulesConflict(ScorelineError):
    """Another publisher started publishing to the same rules topic meanwhile; nothing was written."""

    code = "rules_conflict"
    retriable = True


class RulesRecord(NamedTuple):
    """One published version, as stored on the rules topic."""

    version: int
    "The version the publisher assigned."
    published_at_ms: int
    "Epoch milliseconds of the publish."
    published_by: str
    "Who published it (``user@host`` unless told otherwise)."
    doc: Mapping[str, Any]
    "The rules document, its ``version`` field set to ``version``."

    def rules(self) -> Rules:
        """The validated snapshot, stamped with this record's version (raises ``RulesError``)."""
        return parse_rules(self.doc, version=self.version)

    def to_json(self) -> dict[str, Any]:
        """The record's envelope, as written on the topic."""
        return {"version": self.version, "published_at_ms": self.published_at_ms,
                "published_by": self.published_by, "rules": self.doc}

    def summary(self) -> dict[str, Any]:
        """The envelope without the document, for listings."""
        return {"version": self.version, "published_at_ms": self.published_at_ms,
                "published_by": self.published_by}


def encode_record(record: RulesRecord) -> bytes:
    """The value written on the rules topic."""
    return orjson.dumps(record.to_json())


def decode_record(value: bytes | None) -> RulesRecord:
    """Read an envelope; raise ``RulesError`` naming the field when it is not one.

    Only the envelope is checked here; :meth:`RulesRecord.rules` validates the document.
    """
    try:
        data = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        raise RulesError([f"(record): not valid JSON: {exc}"]) from None
    if not isinstance(data, dict):
        raise RulesError(["(record): expected a JSON object"])
    problems = []
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        problems.append(f"version: expected a positive integer, got {version!r}")
    at = data.get("published_at_ms")
    if isinstance(at, bool) or not isinstance(at, int):
        problems.append(f"published_at_ms: expected an integer, got {at!r}")
    if not isinstance(data.get("published_by"), str):
        problems.append("published_by: expected a string")
    if not isinstance(data.get("rules"), dict):
        problems.append("rules: expected a rules document (a JSON object)")
    if problems:
        raise RulesError(problems)
    return RulesRecord(version, at, data["published_by"], data["rules"])


class RulesLog(NamedTuple):
    """What the rules topic holds, read to its end once."""

    topic: str
    "The rules topic."
    latest: RulesRecord | None
    "The record under key ``rules`` (None if nothing was ever published)."
    versions: Mapping[int, RulesRecord]
    "Version -> its record, from the ``rules.v<N>`` keys."
    highest: int
    "Highest version any readable record names (0 for an empty topic); the next publish is this + 1."
    skipped: tuple[str, ...]
    "One line per record that could not be read (key, offset, why)."

    def get(self, version: int) -> RulesRecord:
        """The record of ``version``; raise :class:`UnknownRulesVersion` if the topic has none."""
        record = self.versions.get(version)
        if record is None:
            known = ", ".join(map(str, sorted(self.versions))) or "none"
            raise UnknownRulesVersion(f"version: rules version {version} is not on {self.topic} "
                                      f"(published versions: {known})")
        return record

    def history(self) -> list[RulesRecord]:
        """Every kept version, oldest first."""
        return [self.versions[v] for v in sorted(self.versions)]


class Published(NamedTuple):
    """What one publish wrote."""

    rules: Rules
    "The snapshot as published, stamped with its version."
    record: RulesRecord
    "The record written under both keys."
    previous_version: int | None
    "The version it replaced as latest (None if it is the first)."


class RulesPublisher:
    """Reads and writes the versions on one rules topic.

    Holds no connection between calls: each call connects, does its work and disconnects
    (publishing is rare and a CLI command does one thing). ``timeout`` bounds reading the
    topic to its end.
    """

    def __init__(self, kafka: KafkaSettings, layout: TopicLayout, *, published_by: str | None = None,
                 timeout: float = 15.0) -> None:
        self.kafka = kafka
        self.layout = layout
        self.topic = layout.rules
        self.published_by = published_by or _who()
        self.timeout = timeout

    async def read(self) -> RulesLog:
        """Read the topic to its end; an absent topic reads as empty."""
        records = await _read_to_end(self.kafka, self.topic, self.timeout)
        return _fold(self.topic, records)

    async def history(self) -> list[RulesRecord]:
        """Every kept version, oldest first."""
        return (await self.read()).history()

    async def latest(self) -> RulesRecord | None:
        """The version in force (key ``rules``), or None if nothing was ever published."""
        return (await self.read()).latest

    async def get(self, version: int) -> RulesRecord:
        """The record of ``version``; raise :class:`UnknownRulesVersion` if the topic has none."""
        return (await self.read()).get(version)

    async def publish(self, doc: Mapping[str, Any]) -> Rules:
        """Validate ``doc`` and publish it as the next version; return the snapshot as published.

        See :meth:`publish_version` for the errors.
        """
        return (await self.publish_version(doc)).rules

    async def publish_version(self, doc: Mapping[str, Any]) -> Published:
        """Validate ``doc``, publish it as version (highest on the topic) + 1, and say what was written.

        Raises ``RulesError`` (nothing is written) for an invalid document,
        :class:`RulesConflict` when another publisher started meanwhile, and
        ``KafkaUnavailable`` when the topic cannot be read to its end in time.
        """
        parse_rules(doc)  # a bad document never reaches the topic, whatever its version
        await ensure_topics(self.kafka.bootstrap, [self._spec()],
                            replication_factor=self.layout.replication_factor, **self.kafka.security)
        # One transactional id per rules topic: starting this producer fences any other
        # publisher of the topic that is between reading the highest version and committing.
        producer = self.kafka.producer("rules-publisher",
                                       transactional_id=f"{self.kafka.client_id}-rules-publisher.{self.topic}")
        try:
            await asyncio.wait_for(producer.start(), self.timeout)
        except (KafkaError, OSError, asyncio.TimeoutError) as exc:
            await _quietly(producer.stop())
            raise KafkaUnavailable(f"cannot start a publisher on {self.topic} at {self.kafka.bootstrap}: "
                                   f"{exc!r}") from exc
        try:
            current = await self.read()
            version = current.highest + 1
            stamped = dict(doc) | {"version": version}
            rules = parse_rules(stamped, version=version)
            record = RulesRecord(version, int(time.time() * 1000), self.published_by, stamped)
            value = encode_record(record)
            async with producer.transaction():
                await producer.send(self.topic, value, key=version_key(version).encode(), partition=_PARTITION)
                await producer.send(self.topic, value, key=LATEST_KEY.encode(), partition=_PARTITION)
        except ProducerFenced as exc:
            raise RulesConflict(f"another publisher is publishing to {self.topic}; nothing was written "
                                f"(read the topic again and retry)") from exc
        except KafkaError as exc:
            raise KafkaUnavailable(f"publishing to {self.topic} failed: {exc!r}") from exc
        finally:
            await _quietly(producer.stop())
        previous = current.latest.version if current.latest else None
        log.info("published rules version %s to %s (previous: %s)", version, self.topic, previous)
        return Published(rules, record, previous)

    async def rollback(self, to: int) -> Rules:
        """Publish version ``to``'s document again, as a new version; return the new snapshot.

        A rollback never rewrites history: the topic gains a version whose document is
        version ``to``'s, and every router follows it like any other publish.
        """
        return (await self.rollback_version(to)).rules

    async def rollback_version(self, to: int) -> Published:
        """Like :meth:`rollback`, saying what was written."""
        record = await self.get(to)
        return await self.publish_version(record.doc)

    def _spec(self) -> TopicSpec:
        return next(s for s in self.layout.specs(()) if s.name == self.topic)


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
                 catch_up_timeout: float = 15.0, check_interval: float = 15.0, retry_after: float = 2.0) -> None:
        self.kafka = kafka
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
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> "RulesWatcher":
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
        except asyncio.TimeoutError:
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
            except Exception as exc:  # any failure: keep the rules in force, reconnect after a pause
                self._report_unreachable(exc)
                await self._close()
                await asyncio.sleep(self.retry_after)

    async def _connect(self) -> None:
        self._consumer = self.kafka.consumer(group_id=None, role="rules-watcher", isolation_level="read_committed",
                                             fetch_max_wait_ms=200)
        await asyncio.wait_for(self._consumer.start(), 10)
        tps = await _partitions(self._consumer, self.topic, timeout=10)
        if tps is None:
            raise LookupError(f"topic {self.topic} does not exist")
        self._consumer.assign(tps)
        for tp in tps:
            if tp in self._next:  # reconnecting: carry on where we were
                self._consumer.seek(tp, self._next[tp])
            else:
                await self._consumer.seek_to_beginning(tp)

    async def _read(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        tps = sorted(consumer.assignment())
        end = await consumer.end_offsets(tps)
        self._reachable()
        loop = asyncio.get_running_loop()
        next_check = loop.time() + self.check_interval
        while True:
            if not self._caught_up.is_set() and await _at_end(consumer, end):
                self._catch_up()
            batch = await consumer.getmany(*tps, timeout_ms=500)
            for tp, records in batch.items():
                for record in records:
                    self._take(record)
                    self._next[tp] = record.offset + 1
            if loop.time() >= next_check:
                # aiokafka reconnects on its own and a fetch to a dead broker just returns
                # nothing, so ask for the end offsets to learn (and log) whether we are cut off.
                next_check = loop.time() + self.check_interval
                try:
                    await asyncio.wait_for(consumer.end_offsets(tps), 10)
                except (KafkaError, OSError, asyncio.TimeoutError) as exc:
                    self._report_unreachable(exc)
                else:
                    self._reachable()

    def _take(self, record: ConsumerRecord) -> None:
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
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await _quietly(consumer.stop())


# ---------------------------------------------------------------- reading


def _fold(topic: str, records: list[ConsumerRecord]) -> RulesLog:
    latest: RulesRecord | None = None
    versions: dict[int, RulesRecord] = {}
    highest = 0
    skipped = []
    for record in records:
        key = record.key.decode("utf-8", "replace") if record.key is not None else ""
        try:
            envelope = decode_record(record.value)
        except RulesError as exc:
            skipped.append(f"{key or '(no key)'}@{record.offset}: {exc}")
            continue
        # Versions are never reused, even one whose document is invalid.
        highest = max(highest, envelope.version)
        if key == LATEST_KEY:
            latest = envelope
        elif key == version_key(envelope.version):
            versions[envelope.version] = envelope
        else:
            skipped.append(f"{key or '(no key)'}@{record.offset}: key does not match version {envelope.version}")
    return RulesLog(topic, latest, versions, highest, tuple(skipped))


async def _read_to_end(kafka: KafkaSettings, topic: str, timeout: float) -> list[ConsumerRecord]:
    """Every committed record of ``topic``, read to the end it has now (empty if no such topic)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    consumer = kafka.consumer(group_id=None, role="rules-reader", isolation_level="read_committed",
                              fetch_max_wait_ms=50)
    try:
        await asyncio.wait_for(consumer.start(), timeout)
    except (KafkaError, OSError, asyncio.TimeoutError) as exc:
        await _quietly(consumer.stop())
        raise KafkaUnavailable(f"cannot reach Kafka at {kafka.bootstrap} to read {topic}: {exc!r}") from exc
    try:
        tps = await _partitions(consumer, topic, timeout=1.0)
        if tps is None:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        records: list[ConsumerRecord] = []
        while not await _at_end(consumer, end):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise KafkaUnavailable(f"could not read {topic} to its end within {timeout:.0f}s")
            batch = await consumer.getmany(*tps, timeout_ms=int(min(remaining, 0.5) * 1000))
            for tp in sorted(batch):
                records.extend(batch[tp])
        return records
    except KafkaError as exc:
        raise KafkaUnavailable(f"reading {topic} failed: {exc!r}") from exc
    finally:
        await _quietly(consumer.stop())


async def _partitions(consumer: AIOKafkaConsumer, topic: str, *, timeout: float) -> list[TopicPartition] | None:
    """The partition holding the rules log, or None if ``topic`` does not exist (yet: metadata may lag).

    Publishers write every record to partition 0, so that is the whole log, however many
    partitions the topic was created with.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if topic in await consumer.topics():  # asks the cluster, not a cache
            return [TopicPartition(topic, _PARTITION)]
        if loop.time() >= deadline:
            return None
        await asyncio.sleep(0.1)


async def _at_end(consumer: AIOKafkaConsumer, end: Mapping[TopicPartition, int]) -> bool:
    for tp, offset in end.items():
        if await consumer.position(tp) < offset:
            return False
    return True


async def _quietly(stopping) -> None:
    # Closing a client whose connection is already gone must not hide the error that matters.
    with contextlib.suppress(Exception):
        await stopping


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"
