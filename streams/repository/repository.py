"""The model repository on Kafka: publish, list, pull and retire packages on ``<prefix>models``.

A published version is immutable: publishing other bytes under an id that exists is refused
with ``model_conflict``; the same bytes again are a no-op. Pulling reads the id's chunks,
checks each chunk's sha256, the archive's and, after unpacking, the package's own digest,
and moves the package into place by one atomic rename: a reader never sees half a package,
and a worker never serves one it could not verify. Workers pull into a cache under
``SCORELINE_HOME`` (:meth:`ModelRepository.ensure`) the first time a batch needs a model
that no local models directory holds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from schemas.errors import ScorelineError
from streams.repository.records import CHUNK_SHA_HEADER, Head, chunk_key, chunks_of, pack, parse_key, unpack
from streams.topics import TopicLayout, TopicSpec
from streams.transport.follow import read_to_end
from streams.transport.headers import headers_of
from streams.transport.kafka import KafkaTransport
from streams.transport.protocols import Record, TopicPartition, Transport
from streams.transport.settings import KafkaSettings
from workflows import ModelUnavailable, load_manifest, package_sha256

__all__ = ["DEFAULT_MAX_PACKAGE_BYTES", "ModelConflict", "ModelRepository", "Published", "RepositoryError"]

log = logging.getLogger(__name__)

DEFAULT_MAX_PACKAGE_BYTES = 256 * 2**20
"""The largest package (as an archive) a repository takes."""

_REFRESH_S = 1.0  # a worker's misses of one model read the repository again at most this often


class ModelConflict(ScorelineError):
    """Different bytes under a published id: a published version is immutable."""

    code = "model_conflict"


class RepositoryError(ModelUnavailable):
    """The repository holds something a worker must not serve (missing chunks, a digest mismatch, ...)."""


@dataclass(frozen=True)
class Published:
    """What ``publish`` did."""

    id: str
    sha256: str
    size: int
    chunks: int
    created: bool
    "False when the same bytes were already published (a no-op)."


class ModelRepository:
    """The packages published on ``<prefix>models``, as one process sees them."""

    def __init__(self, kafka: KafkaSettings, layout: TopicLayout, *, cache_dir: Path,
                 max_package_bytes: int = DEFAULT_MAX_PACKAGE_BYTES, timeout: float = 60.0,
                 transport: Transport | None = None) -> None:
        self.kafka = kafka
        self.transport = transport if transport is not None else KafkaTransport(kafka)
        self.layout = layout
        self.topic = layout.models
        self.cache_dir = cache_dir
        """Where :meth:`ensure` keeps pulled packages, ``<cache>/<sha256 prefix>/<id>/``, each moved in by a rename."""
        self.max_package_bytes = max_package_bytes
        self.timeout = timeout
        self._records: dict[str, Record] = {}
        self._next: int | None = None
        """The offset after the last record read (None: nothing read yet)."""
        self._read_at = -1.0
        """When the last completed read of the topic began (monotonic seconds)."""
        self._missed_at: dict[str, float] = {}
        """When each model last missed (monotonic seconds): its misses re-read the topic once a second at most."""
        self._refreshing = asyncio.Lock()
        """One read of the topic at a time (each continues where the last stopped)."""
        self._pulls: dict[str, asyncio.Lock] = {}
        """One pull per model at a time; pulls of different models run side by side."""

    async def create_topic(self) -> None:
        """Create the compacted repository topic if it is missing (one partition: chunks stay in order)."""
        await self.transport.ensure_topics([TopicSpec(self.topic, 1, (("cleanup.policy", "compact"),))],
                                           replication_factor=self.layout.replication_factor)

    async def refresh(self) -> None:
        """Read the repository topic to its end: the heads, and where each key's latest chunk is.

        The first call reads the whole topic; later ones only what was written since. Chunk values
        are not kept (a repository of hundreds of packages would not fit in a worker): :meth:`_archive`
        fetches a package's chunks again, by offset, when it is pulled.
        """
        await self._refresh()

    async def _refresh(self, *, unless_read_since: float | None = None) -> None:
        async with self._refreshing:
            if unless_read_since is not None and self._read_at >= unless_read_since:
                return  # a read that began after the caller asked has just ended: it covers the caller
            began = time.monotonic()
            if self._next is None:
                await self.create_topic()
            records = await self._read(self._next)
            for record in records:
                key = record.key.decode("utf-8", "replace") if record.key else ""
                if parse_key(key)[1] is not None and record.value is not None:
                    record = dataclasses.replace(record, value=b"")  # where it is, not what it holds
                self._records[key] = record
            if records:
                self._next = records[-1].offset + 1
            elif self._next is None:
                self._next = 0
            self._read_at = began

    async def _read(self, start: int | None) -> list[Record]:
        """The topic's records from ``start`` (None: the beginning) to its end now (read committed)."""
        tp = TopicPartition(self.topic, 0)
        reader = self.transport.reader("models", read_committed=True)
        await reader.start()
        try:
            return await read_to_end(reader, [tp], timeout=self.timeout,
                                     start_at={tp: start} if start is not None else None)
        finally:
            await reader.stop()

    def heads(self) -> dict[str, Head]:
        """Every published (not retired) version as of the last :meth:`refresh`, by id."""
        out = {}
        for key, record in sorted(self._records.items()):
            model_id, index = parse_key(key)
            if index is not None or record.value is None:
                continue
            try:
                out[model_id] = Head.decode(record.value)
            except ValueError as exc:
                log.warning("model repository: head %s is unreadable (%s); skipped", key, exc)
        return out

    async def publish(self, directory: Path, *, by: str) -> Published:
        """Publish the (already validated) package in ``directory``; a no-op for the same bytes.

        Raises:
            ModelConflict: other bytes are published under the same id.
            RepositoryError: the package is larger than ``max_package_bytes``.
        """
        manifest = load_manifest(directory)
        sha256 = await asyncio.to_thread(package_sha256, directory)
        await self.refresh()
        existing = self.heads().get(manifest.id)
        if existing is not None:
            if existing.sha256 != sha256:
                raise ModelConflict(f"{manifest.id} is published with sha256 {existing.sha256[:12]}…; these bytes "
                                    f"are {sha256[:12]}…: a published version is immutable, publish a new version")
            return Published(manifest.id, sha256, existing.size, existing.chunks, created=False)
        archive = await asyncio.to_thread(pack, directory)
        if len(archive) > self.max_package_bytes:
            raise RepositoryError(f"{manifest.id}: the package is {len(archive)} bytes, over the repository's "
                                  f"limit of {self.max_package_bytes}")
        chunks = await asyncio.to_thread(chunks_of, archive)
        archive_sha256 = await asyncio.to_thread(lambda: hashlib.sha256(archive).hexdigest())
        head = Head(manifest.id, sha256, len(archive), len(chunks), archive_sha256,
                    int(time.time() * 1000), by, manifest.to_dict())
        producer = self.transport.producer("models-publish")
        await producer.start()
        try:
            acks = [await producer.send(self.topic, part, key=chunk_key(manifest.id, i).encode(),
                                        headers=[(CHUNK_SHA_HEADER, digest.encode())])
                    for i, (part, digest) in enumerate(chunks)]
            await asyncio.gather(*acks)  # every chunk acknowledged before the head names them
            await producer.send_and_wait(self.topic, head.encode(), key=manifest.id.encode())
        finally:
            await producer.stop()
        log.info("published %s (%d bytes in %d chunks, sha256 %s)", manifest.id, len(archive), len(chunks), sha256)
        return Published(manifest.id, sha256, len(archive), len(chunks), created=True)

    async def retire(self, model_id: str, *, routed: Mapping[str, str] | None = None) -> Head:
        """Tombstone every record of ``model_id``; refused while ``routed`` (model -> where) names it."""
        if routed and model_id in routed:
            raise ModelConflict(f"{model_id} is still routed by the rules in force ({routed[model_id]}); "
                                "publish rules without it first")
        await self.refresh()
        head = self.heads().get(model_id)
        if head is None:
            raise ModelUnavailable(f"no model {model_id!r} in the repository {self.topic}")
        producer = self.transport.producer("models-retire")
        await producer.start()
        try:
            for i in range(head.chunks):
                await producer.send(self.topic, None, key=chunk_key(model_id, i).encode())
            await producer.send_and_wait(self.topic, None, key=model_id.encode())
        finally:
            await producer.stop()
        return head

    async def pull(self, model_id: str, target: Path) -> Path:
        """Write the verified package ``model_id`` to ``target/<model_id>`` (by one rename); return it.

        Raises:
            ModelUnavailable: no such id in the repository.
            RepositoryError: chunks missing, a digest mismatch, an archive for another id.
        """
        await self.refresh()
        return await self._materialise(model_id, target)

    async def ensure(self, model_id: str) -> Path | None:
        """The cached package ``model_id`` (pulled on first need); None if the repository has no such id.

        Raises:
            RepositoryError: the repository holds the id but not a package that verifies.
        """
        async with self._pulls.setdefault(model_id, asyncio.Lock()):
            head = self.heads().get(model_id)
            now = time.monotonic()
            if head is None and now - self._missed_at.get(model_id, -_REFRESH_S) >= _REFRESH_S:
                # The first miss of a model always reads what was published since (a rules version naming a
                # model published a moment ago must find it); misses of the same model re-read once a second
                # at most, and misses of many models at once share one read.
                self._missed_at[model_id] = now
                await self._refresh(unless_read_since=now)
                head = self.heads().get(model_id)
            if head is None:
                return None
            cached = self.cache_dir / head.sha256[:16] / model_id
            if cached.is_dir():
                return cached
            return await self._materialise(model_id, cached.parent)

    async def _materialise(self, model_id: str, target: Path) -> Path:
        head = self.heads().get(model_id)
        if head is None:
            raise ModelUnavailable(f"no model {model_id!r} in the repository {self.topic}")
        final = target / model_id
        if final.is_dir() and await asyncio.to_thread(package_sha256, final) == head.sha256:
            return final
        chunks = await self._fetch_chunks(head)
        # Hashing, joining, unpacking: CPU and disk work (up to the package limit, hashed twice), off the loop.
        archive = await asyncio.to_thread(self._archive, head, chunks)
        return await asyncio.to_thread(self._install, head, archive, target)

    def _install(self, head: Head, archive: bytes, target: Path) -> Path:
        final = target / head.id
        target.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{head.id}.", dir=target))
        try:
            try:
                unpacked = unpack(archive, staging, head.id)
            except (ValueError, OSError) as exc:
                raise RepositoryError(f"{head.id}: the archive does not unpack: {exc}") from exc
            manifest = load_manifest(unpacked)  # also checks that it names the id it is published under
            if manifest.id != head.id or package_sha256(unpacked) != head.sha256:
                raise RepositoryError(f"{head.id}: the unpacked package does not match its published sha256")
            if final.exists():
                shutil.rmtree(final)
            unpacked.rename(final)  # atomic: a reader sees no package or the whole one
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("pulled %s (sha256 %s) into %s", head.id, head.sha256, final)
        return final

    async def _fetch_chunks(self, head: Head) -> dict[int, Record]:
        """The latest record of each chunk of ``head``, read back from the topic by offset."""
        wanted: dict[int, int] = {}  # offset -> chunk index
        for i in range(head.chunks):
            record = self._records.get(chunk_key(head.id, i))
            if record is not None and record.value is not None:
                wanted[record.offset] = i
        if not wanted:
            return {}
        tp = TopicPartition(self.topic, 0)
        reader = self.transport.reader("models-pull", max_records=64)
        await reader.start()
        found: dict[int, Record] = {}
        try:
            reader.assign([tp])
            reader.seek(tp, min(wanted))
            last = max(wanted)
            deadline = asyncio.get_running_loop().time() + self.timeout
            while len(found) < len(wanted):
                if asyncio.get_running_loop().time() > deadline:
                    break
                batch = await reader.getmany(tp, timeout_ms=200)
                for record in batch.get(tp, []):
                    if record.offset in wanted:
                        found[wanted[record.offset]] = record
                if await reader.position(tp) > last:
                    break
        finally:
            await reader.stop()
        return found

    def _archive(self, head: Head, chunks: Mapping[int, Record]) -> bytes:
        parts = []
        missing = []
        for i in range(head.chunks):
            record = chunks.get(i)
            if record is None or record.value is None:
                missing.append(i)
                continue
            digest = headers_of(record.headers).get(CHUNK_SHA_HEADER)
            if digest != hashlib.sha256(record.value).hexdigest():
                raise RepositoryError(f"{head.id}: chunk {i} does not match its sha256")
            parts.append(record.value)
        if missing:
            raise RepositoryError(f"{head.id}: chunks {missing} of {head.chunks} are missing from {self.topic}")
        archive = b"".join(parts)
        if len(archive) != head.size or hashlib.sha256(archive).hexdigest() != head.archive_sha256:
            raise RepositoryError(f"{head.id}: the archive does not match its published sha256")
        return archive
