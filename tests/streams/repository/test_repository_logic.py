"""The model repository's own logic on the in-memory transport: immutability, chunks, verification, retire.

What is Kafka's (a package larger than a message, offsets a later refresh resumes from, workers
pulling while a pipeline runs) stays on the real broker in ``test_repository.py``.
"""

from __future__ import annotations

import dataclasses
import os

import pytest

from streams.repository import ModelConflict, ModelRepository, RepositoryError
from streams.repository.records import CHUNK_SHA_HEADER, chunk_key
from streams.topics import TopicLayout
from streams.transport.memory import MemoryBroker, MemoryTransport
from streams.transport.settings import KafkaSettings
from workflows import ModelUnavailable, package_sha256
from workflows.skeleton import new_package

KAFKA = KafkaSettings(bootstrap="127.0.0.1:1")  # never connected
LAYOUT = TopicLayout(prefix="mem.")


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker()


@pytest.fixture
def repository(broker, tmp_path) -> ModelRepository:
    return ModelRepository(KAFKA, LAYOUT, cache_dir=tmp_path / "cache", transport=MemoryTransport(broker))


async def test_publish_then_pull_gives_the_same_bytes_and_a_published_version_is_immutable(repository, tmp_path):
    package = new_package(tmp_path / "src", "echo@v1", "echo")
    first = await repository.publish(package, by="test")
    assert first.created and first.chunks == 1 and first.sha256 == package_sha256(package)
    again = await repository.publish(package, by="test")
    assert not again.created and again.sha256 == first.sha256  # the same bytes: a no-op
    (package / "workflow.py").write_text((package / "workflow.py").read_text() + "\n# changed\n")
    with pytest.raises(ModelConflict, match="a published version is immutable") as err:
        await repository.publish(package, by="test")
    assert err.value.code == "model_conflict"
    pulled = await repository.pull("echo@v1", tmp_path / "out")
    assert pulled == tmp_path / "out" / "echo@v1" and package_sha256(pulled) == first.sha256
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["echo@v1"]  # nothing half-written left beside it
    assert set(repository.heads()) == {"echo@v1"}


async def test_a_tampered_or_missing_chunk_is_never_served(repository, tmp_path):
    package = new_package(tmp_path / "src", "big@v1", "big")
    (package / "vocabulary.bin").write_bytes(os.urandom(1_300_000))
    await repository.publish(package, by="test")
    producer = repository.transport.producer("test-tamper")
    await producer.start()
    try:
        forged = b"x" * 10
        await producer.send_and_wait(repository.topic, forged, key=chunk_key("big@v1", 1).encode(),
                                     headers=[(CHUNK_SHA_HEADER, b"0" * 64)])
        with pytest.raises(RepositoryError, match="chunk 1 does not match its sha256"):
            await repository.pull("big@v1", tmp_path / "out")
        await producer.send_and_wait(repository.topic, None, key=chunk_key("big@v1", 1).encode())
        with pytest.raises(RepositoryError, match=r"chunks \[1\] of 3 are missing"):
            await repository.pull("big@v1", tmp_path / "out")
    finally:
        await producer.stop()
    assert not (tmp_path / "out" / "big@v1").exists()


async def test_a_package_over_the_size_limit_is_refused_and_nothing_is_written(repository, tmp_path):
    small = ModelRepository(KAFKA, LAYOUT, cache_dir=tmp_path / "cache", max_package_bytes=100_000,
                            transport=repository.transport)
    package = new_package(tmp_path / "src", "huge@v1", "huge")
    (package / "vocabulary.bin").write_bytes(os.urandom(200_000))
    with pytest.raises(RepositoryError, match="over the repository's limit of 100000"):
        await small.publish(package, by="test")
    await small.refresh()
    assert "huge@v1" not in small.heads()


async def test_a_head_whose_package_names_another_id_is_never_served(repository, tmp_path):
    real = await repository.publish(new_package(tmp_path / "src", "echo@v1", "echo"), by="test")
    await repository.refresh()
    head = repository.heads()["echo@v1"]
    producer = repository.transport.producer("test-forge")
    await producer.start()
    try:  # echo@v1's chunk, announced as other@v1
        chunk = repository._records[chunk_key("echo@v1", 0)]
        await producer.send_and_wait(repository.topic, (await _values(repository))[chunk_key("echo@v1", 0)],
                                     key=chunk_key("other@v1", 0).encode(), headers=list(chunk.headers))
        forged = dataclasses.replace(head, id="other@v1")
        await producer.send_and_wait(repository.topic, forged.encode(), key=b"other@v1")
    finally:
        await producer.stop()
    with pytest.raises(RepositoryError, match="other@v1"):
        await repository.pull("other@v1", tmp_path / "out")
    assert not (tmp_path / "out" / "other@v1").exists() and real.created


async def test_chunks_written_out_of_order_are_put_back_in_order_by_their_index(repository, tmp_path):
    package = new_package(tmp_path / "src", "big@v1", "big")
    (package / "vocabulary.bin").write_bytes(os.urandom(1_300_000))
    published = await repository.publish(package, by="test")
    await repository.refresh()
    records = await _values(repository)
    producer = repository.transport.producer("test-reorder")
    await producer.start()
    try:  # chunk 0 again, now after chunks 1 and 2 in the log
        await producer.send_and_wait(repository.topic, records[chunk_key("big@v1", 0)],
                                     key=chunk_key("big@v1", 0).encode(),
                                     headers=list(repository._records[chunk_key("big@v1", 0)].headers))
    finally:
        await producer.stop()
    again = ModelRepository(KAFKA, LAYOUT, cache_dir=tmp_path / "cache2", transport=repository.transport)
    assert package_sha256(await again.pull("big@v1", tmp_path / "out")) == published.sha256


async def _values(repository: ModelRepository) -> dict[str, bytes]:
    """Every key's latest value on the repository topic (the repository itself keeps only where chunks are)."""
    return {r.key.decode(): r.value for r in await repository._read(None) if r.key and r.value}


async def test_retire_is_refused_while_routed_and_then_tombstones_the_version(repository, tmp_path):
    package = new_package(tmp_path / "src", "echo@v1", "echo")
    await repository.publish(package, by="test")
    with pytest.raises(ModelConflict, match="still routed by the rules in force"):
        await repository.retire("echo@v1", routed={"echo@v1": "rules version 3, shard s1"})
    await repository.retire("echo@v1", routed={})
    await repository.refresh()
    assert repository.heads() == {}
    with pytest.raises(ModelUnavailable, match="no model 'echo@v1' in the repository"):
        await repository.pull("echo@v1", tmp_path / "out")


async def test_a_compacted_repository_still_serves_every_published_version(repository, broker, tmp_path):
    big = new_package(tmp_path / "src", "big@v1", "big")
    (big / "vocabulary.bin").write_bytes(os.urandom(1_300_000))
    published = await repository.publish(big, by="test")
    echo = await repository.publish(new_package(tmp_path / "src", "echo@v1", "echo"), by="test")
    await repository.retire("echo@v1")
    again = await repository.publish(big, by="test")  # the same bytes: nothing written
    assert not again.created
    broker.compact(LAYOUT.models, drop_tombstones=True)  # the cleaner took echo@v1 away for good
    fresh = ModelRepository(KAFKA, LAYOUT, cache_dir=tmp_path / "fresh", transport=repository.transport)
    assert package_sha256(await fresh.pull("big@v1", tmp_path / "out")) == published.sha256
    assert set(fresh.heads()) == {"big@v1"} and echo.created


async def test_a_model_published_a_moment_after_the_last_read_is_found_at_its_first_miss(repository, tmp_path,
                                                                                        reads):
    await repository.refresh()  # a worker's read, then a publish right after it
    publisher = ModelRepository(KAFKA, LAYOUT, cache_dir=tmp_path / "unused", transport=repository.transport)
    await publisher.publish(new_package(tmp_path / "src", "echo@v1", "echo"), by="test")
    reads.clear()
    assert await repository.ensure("echo@v1") is not None  # not "unavailable" for the rest of a second
    assert await repository.ensure("nope@v1") is None
    assert await repository.ensure("nope@v1") is None  # a second miss within the second reads nothing more
    assert len(reads) == 2
