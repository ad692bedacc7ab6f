"""The model repository on a real broker: publish, immutability, chunks, verification, retire, workers pulling."""

from __future__ import annotations

import json
import os

import pytest
from streams_testing import eventually

from routing import rules_to_doc
from streams.client.score_client import ScoreClient
from streams.repository import ModelRepository
from streams.rules.publisher import RulesPublisher
from streams.services.pipeline import Pipeline, PipelineOptions
from workflows import InMemoryFactStore, ModelRegistry, package_sha256
from workflows.registry import default_facts_dir
from workflows.skeleton import new_package

pytestmark = pytest.mark.kafka


@pytest.fixture
def repository(kafka, layout, tmp_path) -> ModelRepository:
    return ModelRepository(kafka, layout, cache_dir=tmp_path / "cache")


async def test_a_package_larger_than_a_message_travels_in_chunks(repository, tmp_path):
    package = new_package(tmp_path / "src", "big@v1", "big")
    (package / "vocabulary.bin").write_bytes(os.urandom(1_300_000))
    published = await repository.publish(package, by="test")
    assert published.chunks == 3
    assert package_sha256(await repository.pull("big@v1", tmp_path / "out")) == published.sha256


async def test_a_refresh_reads_only_what_was_published_since_the_last_one(repository, kafka, layout, tmp_path,
                                                                          reads):
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
    assert [(r.status, r.model) for r in results] == [("ok", m) for m in versions], results[0].error
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
