"""The model repository on a real broker: publish, immutability, chunks, verification, retire, workers pulling."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
from streams_testing import eventually

from routing import rules_to_doc
from streams.client.score_client import ScoreClient
from streams.repository import ModelConflict, ModelRepository, RepositoryError
from streams.repository.records import CHUNK_SHA_HEADER, chunk_key
from streams.rules.publisher import RulesPublisher
from streams.services.pipeline import Pipeline, PipelineOptions
from workflows import InMemoryFactStore, ModelRegistry, ModelUnavailable, package_sha256
from workflows.registry import default_facts_dir
from workflows.skeleton import new_package

pytestmark = pytest.mark.kafka


@pytest.fixture
def repository(kafka, layout, tmp_path) -> ModelRepository:
    return ModelRepository(kafka, layout, cache_dir=tmp_path / "cache")


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


async def test_a_package_larger_than_a_message_travels_in_chunks(repository, tmp_path):
    package = new_package(tmp_path / "src", "big@v1", "big")
    (package / "vocabulary.bin").write_bytes(os.urandom(1_300_000))
    published = await repository.publish(package, by="test")
    assert published.chunks == 3
    assert package_sha256(await repository.pull("big@v1", tmp_path / "out")) == published.sha256


async def test_a_refresh_reads_only_what_was_published_since_the_last_one(repository, kafka, layout, tmp_path,
                                                                          monkeypatch):
    import streams.repository.repository as module

    reads: list[int] = []
    real = module.read_topic

    async def counting(*args, **kwargs):
        records = await real(*args, **kwargs)
        reads.append(len(records))
        return records

    monkeypatch.setattr(module, "read_topic", counting)
    big = new_package(tmp_path / "src", "big@v1", "big")
    (big / "vocabulary.bin").write_bytes(os.urandom(1_300_000))
    await repository.publish(big, by="test")  # its refresh: nothing yet
    await repository.publish(new_package(tmp_path / "src", "echo@v1", "echo"), by="test")  # 3 chunks + a head
    await repository.refresh()  # echo@v1's chunk and head, not big@v1's again
    assert reads == [0, 4, 2]
    assert set(repository.heads()) == {"big@v1", "echo@v1"}
    other = ModelRepository(kafka, layout, cache_dir=tmp_path / "other")
    await other.refresh()  # a fresh reader reads it all once
    assert reads[-1] == 6 and set(other.heads()) == set(repository.heads())


async def test_a_tampered_or_missing_chunk_is_never_served(repository, kafka, tmp_path):
    package = new_package(tmp_path / "src", "big@v1", "big")
    (package / "vocabulary.bin").write_bytes(os.urandom(1_300_000))
    await repository.publish(package, by="test")
    producer = kafka.producer("test-tamper")
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


async def test_a_package_over_the_size_limit_is_refused_and_nothing_is_written(kafka, layout, tmp_path):
    small = ModelRepository(kafka, layout, cache_dir=tmp_path / "cache", max_package_bytes=100_000)
    package = new_package(tmp_path / "src", "huge@v1", "huge")
    (package / "vocabulary.bin").write_bytes(os.urandom(200_000))
    with pytest.raises(RepositoryError, match="over the repository's limit of 100000"):
        await small.publish(package, by="test")
    await small.refresh()
    assert "huge@v1" not in small.heads()


async def test_a_head_whose_package_names_another_id_is_never_served(repository, kafka, tmp_path):
    real = await repository.publish(new_package(tmp_path / "src", "echo@v1", "echo"), by="test")
    await repository.refresh()
    head = repository.heads()["echo@v1"]
    producer = kafka.producer("test-forge")
    await producer.start()
    try:  # echo@v1's chunk, announced as other@v1
        chunk = repository._records[chunk_key("echo@v1", 0)]
        await producer.send_and_wait(repository.topic, (await _values(repository, kafka))[chunk_key("echo@v1", 0)],
                                     key=chunk_key("other@v1", 0).encode(), headers=list(chunk.headers))
        forged = dataclasses.replace(head, id="other@v1")
        await producer.send_and_wait(repository.topic, forged.encode(), key=b"other@v1")
    finally:
        await producer.stop()
    with pytest.raises(RepositoryError, match="other@v1"):
        await repository.pull("other@v1", tmp_path / "out")
    assert not (tmp_path / "out" / "other@v1").exists() and real.created


async def test_chunks_written_out_of_order_are_put_back_in_order_by_their_index(repository, kafka, tmp_path):
    package = new_package(tmp_path / "src", "big@v1", "big")
    (package / "vocabulary.bin").write_bytes(os.urandom(1_300_000))
    published = await repository.publish(package, by="test")
    await repository.refresh()
    records = await _values(repository, kafka)
    producer = kafka.producer("test-reorder", max_request_size=4 * 2**20)
    await producer.start()
    try:  # chunk 0 again, now after chunks 1 and 2 in the log
        await producer.send_and_wait(repository.topic, records[chunk_key("big@v1", 0)],
                                     key=chunk_key("big@v1", 0).encode(),
                                     headers=list(repository._records[chunk_key("big@v1", 0)].headers))
    finally:
        await producer.stop()
    again = ModelRepository(kafka, repository.layout, cache_dir=tmp_path / "cache2")
    assert package_sha256(await again.pull("big@v1", tmp_path / "out")) == published.sha256


async def _values(repository: ModelRepository, kafka) -> dict[str, bytes]:
    """Every key's latest value on the repository topic (the repository itself keeps only where chunks are)."""
    from streams.transport.topic_reader import read_topic

    return {r.key.decode(): r.value for r in await read_topic(kafka, repository.topic) if r.key and r.value}


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


async def test_a_running_pipeline_serves_30_versions_published_after_it_started_without_a_restart(
        kafka, layout, rules, tmp_path):
    """Nothing of theirs on its disk: the workers pull each version on first need, verified, into their cache."""
    empty = tmp_path / "models"
    empty.mkdir()
    registry = ModelRegistry(empty, InMemoryFactStore.from_dir(default_facts_dir()))
    options = PipelineOptions(roles=("router", "worker"), model_cache=tmp_path / "cache")
    async with Pipeline(kafka, layout, rules, registry, options) as pipeline:
        await pipeline.wait_ready()
        publisher = ModelRepository(kafka, layout, cache_dir=tmp_path / "unused")
        versions = [f"echo@v{i}" for i in range(1, 31)]
        for i, model_id in enumerate(versions, 1):
            package = new_package(tmp_path / "src", model_id, "echo")
            manifest = json.loads((package / "manifest.json").read_text())
            (package / "manifest.json").write_text(json.dumps({**manifest, "params": {"scale": float(i)}}))
            await publisher.publish(package, by="test")
        doc = json.loads(json.dumps(rules_to_doc(rules)))
        doc["models"].update({m: {"shard": rules.shards[0]} for m in versions})
        doc["objectives"]["echo"] = {"shard_key": "context.user_id", "default": versions[0],
                                     "override_clients": ["demo"]}
        await RulesPublisher(kafka, layout, published_by="test").publish(doc)
        assert await eventually(lambda: "echo" in pipeline.rules().objectives, timeout=30)
        async with ScoreClient(kafka, "demo", layout=layout) as client:
            results = [await client.score("echo", {"user_id": "u-1"}, {"x": 0.1}, model=m, timeout=30)
                       for m in versions]
    assert [(r.status, r.model) for r in results] == [("ok", m) for m in versions]
    assert len({r.result["score"] for r in results}) == 30  # each version's own parameters
    assert sorted(p.name for p in (tmp_path / "cache").glob("*/*")) == sorted(versions)
    assert list(empty.iterdir()) == []


async def test_pulls_hash_off_the_event_loop_and_one_models_pull_never_waits_for_anothers(repository, tmp_path,
                                                                                         monkeypatch):
    """The chunks' and the archive's digests are computed on a thread, and pulls of two models run side by side:
    while one model's chunks are still being fetched, another model is pulled and served."""
    import asyncio
    import threading

    for model_id in ("slow@v1", "quick@v1"):
        await repository.publish(new_package(tmp_path / "src", model_id, model_id.split("@")[0]), by="test")
    await repository.refresh()  # both heads known: what follows is only the pulls
    hashed_on: list[str] = []
    archive = repository._archive
    monkeypatch.setattr(repository, "_archive", lambda head, chunks: (
        hashed_on.append(threading.current_thread().name), archive(head, chunks))[1])
    fetch, entered, gate = repository._fetch_chunks, asyncio.Event(), asyncio.Event()

    async def held_fetch(head):
        if head.id == "slow@v1":
            entered.set()
            await asyncio.wait_for(gate.wait(), timeout=30)  # this pull stays mid-fetch until the test says
        return await fetch(head)
    monkeypatch.setattr(repository, "_fetch_chunks", held_fetch)

    slow = asyncio.create_task(repository.ensure("slow@v1"))
    await asyncio.wait_for(entered.wait(), timeout=30)  # the slow pull is mid-fetch, holding its lock
    quick = await asyncio.wait_for(repository.ensure("quick@v1"), timeout=30)  # one lock for all: this waited
    assert quick is not None and not slow.done()
    gate.set()
    assert (await slow).name == "slow@v1"
    assert hashed_on and threading.main_thread().name not in hashed_on
