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
:class:`~streams.rules.holder.RulesHolder`; an invalid record is logged and skipped, so a bad
record never replaces a good version.

The envelope and reading the topic live in :mod:`streams.rules.log`, the watcher in
:mod:`streams.rules.watcher`; this module publishes, and re-exports their names.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import socket
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

from routing import Rules, parse_rules
from schemas.errors import ScorelineError
from streams.errors import KafkaUnavailable
from streams.rules.log import (
    LATEST_KEY,
    PARTITION,
    RulesLog,
    RulesRecord,
    UnknownRulesVersion,
    decode_record,
    encode_record,
    quietly,
    read_log,
    version_key,
)
from streams.rules.watcher import RulesWatcher
from streams.topics import TopicLayout, TopicSpec
from streams.transport.kafka import KafkaTransport
from streams.transport.protocols import KafkaError, ProducerFenced, Transport
from streams.transport.settings import KafkaSettings

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
    "operator_name",
    "encode_record",
    "version_key",
]

log = logging.getLogger(__name__)


class RulesConflict(ScorelineError):
    """Another publisher started publishing to the same rules topic meanwhile, or the version a publish was
    based on is no longer the latest; nothing was written."""

    code = "rules_conflict"
    retriable = True


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
                 timeout: float = 15.0, transport: Transport | None = None) -> None:
        self.kafka = kafka
        self.transport = transport if transport is not None else KafkaTransport(kafka)
        self.layout = layout
        self.topic = layout.rules
        self.published_by = published_by or operator_name()
        self.timeout = timeout

    async def read(self) -> RulesLog:
        """Read the topic to its end; an absent topic reads as empty."""
        return await read_log(self.kafka, self.topic, self.timeout, transport=self.transport)

    async def history(self) -> list[RulesRecord]:
        """Every kept version, oldest first."""
        return (await self.read()).history()

    async def latest(self) -> RulesRecord | None:
        """The version in force (key ``rules``), or None if nothing was ever published."""
        return (await self.read()).latest

    async def get(self, version: int) -> RulesRecord:
        """The record of ``version``; raise :class:`UnknownRulesVersion` if the topic has none."""
        return (await self.read()).get(version)

    async def publish(self, doc: Mapping[str, Any], *, if_version: int | None = None) -> Rules:
        """Validate ``doc`` and publish it as the next version; return the snapshot as published.

        See :meth:`publish_version` for ``if_version`` and the errors.
        """
        return (await self.publish_version(doc, if_version=if_version)).rules

    async def publish_version(self, doc: Mapping[str, Any], *, if_version: int | None = None) -> Published:
        """Validate ``doc``, publish it as version (highest on the topic) + 1, and say what was written.

        ``if_version``: compare-and-set. Publish only if version ``if_version`` is still the latest
        (0: only if nothing was published yet); the check and the write are one step, since every
        publisher of the topic shares one transactional id and starting it fences the others.

        Raises ``RulesError`` (nothing is written) for an invalid document,
        :class:`RulesConflict` when another publisher started meanwhile or ``if_version`` is no longer
        the latest, and ``KafkaUnavailable`` when the topic cannot be read to its end in time.
        """
        parse_rules(doc)  # a bad document never reaches the topic, whatever its version
        await self.transport.ensure_topics([self._spec()], replication_factor=self.layout.replication_factor)
        # One transactional id per rules topic: starting this producer fences any other
        # publisher of the topic that is between reading the highest version and committing.
        producer = self.transport.transactional_producer(
            "rules-publisher", f"{self.kafka.client_id}-rules-publisher.{self.topic}")
        try:
            await asyncio.wait_for(producer.start(), self.timeout)
        except (TimeoutError, KafkaError, OSError) as exc:
            await quietly(producer.stop())
            raise KafkaUnavailable(f"cannot start a publisher on {self.topic} at {self.kafka.bootstrap}: "
                                   f"{exc!r}") from exc
        try:
            current = await self.read()
            latest = current.latest.version if current.latest else 0
            if if_version is not None and latest != if_version:
                raise RulesConflict(f"rules version {latest} is the latest on {self.topic}, not {if_version}: "
                                    f"another publish landed since; nothing was written (read the rules again, "
                                    f"and publish on top of version {latest} if you still mean to)")
            version = current.highest + 1
            stamped = dict(doc) | {"version": version}
            rules = parse_rules(stamped, version=version)
            record = RulesRecord(version, int(time.time() * 1000), self.published_by, stamped)
            value = encode_record(record)
            async with producer.transaction():
                await producer.send(self.topic, value, key=version_key(version).encode(), partition=PARTITION)
                await producer.send(self.topic, value, key=LATEST_KEY.encode(), partition=PARTITION)
        except ProducerFenced as exc:
            raise RulesConflict(f"another publisher is publishing to {self.topic}; nothing was written "
                                f"(read the topic again and retry)") from exc
        except KafkaError as exc:
            raise KafkaUnavailable(f"publishing to {self.topic} failed: {exc!r}") from exc
        finally:
            await quietly(producer.stop())
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


def operator_name() -> str:
    """``user@host`` of whoever runs this process: who publishes, unless told otherwise."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"
