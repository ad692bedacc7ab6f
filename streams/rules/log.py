"""What the rules topic holds: the record envelope, its keys, and reading the topic to its end.

See :mod:`streams.rules.publisher` for the layout of the topic: per version ``N`` one record
under key ``rules.v<N>`` and one under ``rules`` (the latest), both on partition 0, both
holding the envelope ``{"version", "published_at_ms", "published_by", "rules"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any, NamedTuple, cast

import orjson

from routing import Rules, RulesError, parse_rules
from schemas.errors import ScorelineError
from streams.errors import KafkaUnavailable
from streams.transport import follow
from streams.transport.kafka import KafkaTransport
from streams.transport.protocols import KafkaError, Reader, Record, TopicPartition, Transport
from streams.transport.settings import KafkaSettings

__all__ = [
    "LATEST_KEY",
    "RulesLog",
    "RulesRecord",
    "UnknownRulesVersion",
    "decode_record",
    "encode_record",
    "read_log",
    "version_key",
]

LATEST_KEY = "rules"
"Key of the record holding the latest version: what routers follow."
_VERSION_KEY_PREFIX = "rules.v"
# Every record goes to partition 0: the latest and the per-version keys must share one
# ordered log, whatever partitioner a topic with more partitions would apply.
PARTITION = 0


def version_key(version: int) -> str:
    """The key that keeps one version on the compacted topic (``rules.v<N>``)."""
    return f"{_VERSION_KEY_PREFIX}{version}"


class UnknownRulesVersion(ScorelineError):
    """The rules topic holds no such version (never published, or not a valid record)."""

    code = "unknown_rules_version"


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
    return RulesRecord(cast(int, version), cast(int, at), data["published_by"], data["rules"])  # checked above


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


async def read_log(kafka: KafkaSettings, topic: str, timeout: float, *,
                   transport: Transport | None = None) -> RulesLog:
    """Read ``topic`` to its end and say what it holds; an absent topic reads as empty."""
    return fold_log(topic, await read_to_end(kafka, topic, timeout, transport=transport))


def fold_log(topic: str, records: list[Record]) -> RulesLog:
    """What ``records`` (the topic read in order) say: the latest, every kept version, what was unreadable."""
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


async def read_to_end(kafka: KafkaSettings, topic: str, timeout: float, *,
                      transport: Transport | None = None) -> list[Record]:
    """Every committed record of ``topic``'s log partition, read to the end it has now (empty if no such topic)."""
    reader = (transport if transport is not None else KafkaTransport(kafka)).reader("rules-reader",
                                                                                     read_committed=True)
    try:
        await asyncio.wait_for(reader.start(), timeout)
    except (TimeoutError, KafkaError, OSError) as exc:
        await quietly(reader.stop())
        raise KafkaUnavailable(f"cannot reach Kafka at {kafka.bootstrap} to read {topic}: {exc!r}") from exc
    try:
        tps = await log_partitions(reader, topic, timeout=1.0)
        if tps is None:
            return []
        return await follow.read_to_end(reader, tps, timeout=timeout)
    except TimeoutError as exc:
        raise KafkaUnavailable(f"could not read {topic} to its end within {timeout:.0f}s") from exc
    except KafkaError as exc:
        raise KafkaUnavailable(f"reading {topic} failed: {exc!r}") from exc
    finally:
        await quietly(reader.stop())


async def log_partitions(reader: Reader, topic: str, *, timeout: float) -> list[TopicPartition] | None:
    """The partition holding the rules log, or None if ``topic`` does not exist (yet: metadata may lag).

    Publishers write every record to partition 0, so that is the whole log, however many
    partitions the topic was created with.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if topic in await reader.topics():  # asks the cluster, not a cache
            return [TopicPartition(topic, PARTITION)]
        if loop.time() >= deadline:
            return None
        await asyncio.sleep(0.1)


async def quietly(stopping) -> None:
    """Await a client's ``stop()``, ignoring its failure."""
    # Closing a client whose connection is already gone must not hide the error that matters.
    with contextlib.suppress(Exception):
        await stopping
