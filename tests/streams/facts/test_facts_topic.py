"""Facts on Kafka against a real broker: publish, co-partitioning, workers materialising what they own, score.

What a materialiser holds as partitions come and go, later publishes and tombstones, is tested on
the in-memory transport (``test_facts_materialiser.py``).
"""

from __future__ import annotations

import pytest

from routing import partition_for
from schemas.messages import Status
from streams.client.score_client import ScoreClient
from streams.facts.topic import SPEC_KEY, FactTopicError, publish_facts
from streams.services.pipeline import Pipeline, PipelineOptions
from streams.topics import TopicLayout
from streams.transport.tail import TopicTail
from workflows import InMemoryFactStore, Item, default_facts_dir, sample_items

pytestmark = pytest.mark.kafka

USER_FACTS = ("user_embedding", "user_profile", "user_txn_history")


@pytest.fixture(scope="module")
def files() -> InMemoryFactStore:
    return InMemoryFactStore.from_dir(default_facts_dir())


def users_on(files: InMemoryFactStore, partitions: set[int], count: int) -> set[str]:
    return {u for u in files.keys("user_embedding") if partition_for(u, count) in partitions}


async def test_publish_places_each_user_on_the_partition_of_its_work(kafka, layout, files):
    report = await publish_facts(kafka, layout, default_facts_dir())

    assert set(report) == {"title_availability", *USER_FACTS}
    for fact, entry in report.items():
        assert entry["topic"] == layout.facts(fact)
        assert entry["partitions"] == layout.shard_partitions
        assert entry["rows"] == len(files.keys(fact)) == sum(entry["rows_per_partition"])
    scopes = {f: report[f]["scope"] for f in report}
    assert scopes == {"title_availability": "global", **dict.fromkeys(USER_FACTS, "shard")}
    # Co-partitioning is one function: the router sends u's work to partition_for(u, n) of the
    # shard topic and the publisher sends u's facts to partition_for(u, n) of the fact topic.
    per_partition = [len(users_on(files, {p}, layout.shard_partitions)) for p in range(layout.shard_partitions)]
    assert report["user_embedding"]["rows_per_partition"] == per_partition
    async with TopicTail(kafka, [layout.facts("user_embedding")], from_beginning=True) as tail:
        assert await tail.wait_for(lambda: len(tail.records) >= report["user_embedding"]["rows"], timeout=30)
    rows = [r for r in tail.records if r.key != SPEC_KEY]
    assert {r.partition for r in tail.records if r.key == SPEC_KEY} == set(range(layout.shard_partitions))
    assert all(r.partition == partition_for(r.key.decode(), layout.shard_partitions) for r in rows)


async def test_publish_refuses_a_fact_topic_that_would_not_line_up(kafka, layout, files):
    await publish_facts(kafka, layout, files, ["user_profile"])
    wider = TopicLayout(prefix=layout.prefix, shard_partitions=layout.shard_partitions + 1)
    with pytest.raises(FactTopicError, match="partitions"):
        await publish_facts(kafka, wider, files, ["user_profile"])
    with pytest.raises(FactTopicError, match="no fact named nope"):
        await publish_facts(kafka, layout, files, ["nope"])


async def test_workers_with_kafka_facts_score_like_workers_with_files(kafka, layout, rules, registry, files):
    await publish_facts(kafka, layout, files)
    options = PipelineOptions(fact_source="kafka", workers_per_shard=2)
    items = {o: sample_items(o, 40, seed=7) for o in ("title-ranking", "fraud-score")}
    async with Pipeline(kafka, layout, rules, registry, options) as pipeline:
        await pipeline.wait_ready()
        work_topics = [layout.shard(s) for s in rules.shards]
        async with TopicTail(kafka, work_topics, from_beginning=True) as work, \
                ScoreClient(kafka, "demo", layout=layout) as client:
            requests = [client.request(o, i.context, i.payload) for o, batch in items.items() for i in batch]
            results = await client.score_many(requests, timeout=60, return_exceptions=False)
            assert await work.wait_for(lambda: len(work.records) >= len(requests), timeout=30)
        # The router put each user's work on the partition number that holds the user's facts.
        assert all(r.partition == partition_for(r.key.decode(), layout.shard_partitions) for r in work.records)
        workers = [s for s in pipeline.services if getattr(s, "facts", None) is not None]
        assert workers and all(w.registry is not registry for w in workers)
        for worker in workers:
            owned = set(worker.facts.stats()["owned"])
            # Each worker holds exactly the users of the partitions it owns, no more.
            assert set(worker.facts.store.keys("user_embedding")) == users_on(files, owned, layout.shard_partitions)

    assert {r.status for r in results} == {Status.OK}
    # Same scores as the registry over the fact files: the Kafka copy is exact.
    for request, result in zip(requests, results):
        expected = registry.get(result.model).score_batch([Item(request.context, request.payload)])[0]
        assert _close(result.result, expected.value), (request.context, result.result, expected.value)


def _close(got, want) -> bool:
    """Equal, floats to 1e-9: scores of an item do not depend on its batch, up to rounding."""
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and all(_close(got[k], want[k]) for k in want)
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(map(_close, got, want))
    if isinstance(want, float):
        return got == pytest.approx(want, abs=1e-9)
    return got == want
