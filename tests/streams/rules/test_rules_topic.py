"""The rules lifecycle on a real broker: racing publishers fenced by Kafka's transactions, a rogue writer, hot
reload without losing a request. Numbering, history, rollback and compare-and-set run on the in-memory transport
(``test_rules_publisher.py``)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import pytest

from routing import RequestView, RulesError, route, rules_to_doc
from schemas import codec
from schemas.messages import Status
from streams.client.score_client import ScoreClient
from streams.rules.holder import RulesHolder
from streams.rules.publisher import (
    LATEST_KEY,
    RulesConflict,
    RulesPublisher,
    RulesRecord,
    RulesWatcher,
    encode_record,
)
from streams.services.pipeline import Pipeline
from streams.transport.admin import ensure_topics
from streams.transport.kafka import aiokafka_producer
from streams.transport.settings import KafkaSettings
from streams.transport.tail import TopicTail

pytestmark = pytest.mark.kafka


def with_canary(rules, percent: float) -> dict:
    """The rules' document with the title-ranking canary at ``percent``."""
    doc = rules_to_doc(rules)
    doc["objectives"]["title-ranking"]["canary"]["percent"] = percent
    return doc


async def create_rules_topic(kafka, layout) -> None:
    await ensure_topics(kafka.bootstrap, [s for s in layout.specs(()) if s.name == layout.rules])


async def test_bad_publish_is_refused_and_a_bad_record_is_skipped(kafka, layout, rules, caplog):
    await create_rules_topic(kafka, layout)
    publisher = RulesPublisher(kafka, layout)
    holder = RulesHolder(rules)
    async with RulesWatcher(kafka, layout, holder) as watcher:
        await publisher.publish(with_canary(rules, 0))
        assert await watcher.wait_for_version(1, timeout=30)

        bad = with_canary(rules, 0)
        bad["objectives"]["title-ranking"]["default"] = "no-such@v9"
        with pytest.raises(RulesError) as refused:
            await publisher.publish(bad)
        assert "objectives.title-ranking.default: unknown model 'no-such@v9'" in refused.value.problems
        assert (await publisher.read()).highest == 1

        # A writer that skips validation (kcat, a bug): readers validate too and keep version 1.
        producer = aiokafka_producer(kafka, "test-rogue")
        await producer.start()
        try:
            await producer.send_and_wait(layout.rules, encode_record(RulesRecord(2, 0, "rogue", bad)),
                                         key=LATEST_KEY.encode(), partition=0)
            await producer.send_and_wait(layout.rules, b"not json", key=LATEST_KEY.encode(), partition=0)
        finally:
            await producer.stop()
        with caplog.at_level(logging.ERROR, logger="streams.rules.publisher"):
            deadline = asyncio.get_running_loop().time() + 30
            while watcher.skipped < 2 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
        assert watcher.skipped == 2
        assert holder.version == 1 and holder().objectives["title-ranking"].default == "title-ranking@v1"
        assert "unknown model 'no-such@v9'" in caplog.text

        # Versions are never reused: the next publish is past the rogue record's version.
        assert (await publisher.publish(with_canary(rules, 5))).version == 3
        assert await watcher.wait_for_version(3, timeout=30)
        assert holder().objectives["title-ranking"].canary.percent == 5


async def test_watcher_that_cannot_reach_kafka_serves_the_fallback(layout, rules, caplog):
    holder = RulesHolder(rules)
    nowhere = KafkaSettings(bootstrap="127.0.0.1:1")
    with caplog.at_level(logging.WARNING, logger="streams.rules.publisher"):
        async with RulesWatcher(nowhere, layout, holder, catch_up_timeout=1.0, retry_after=0.2) as watcher:
            assert not watcher.caught_up
            assert holder() is rules
    assert f"serving fallback rules version {rules.version}" in caplog.text


async def test_racing_publishers_never_share_a_version(kafka, layout, rules):
    await create_rules_topic(kafka, layout)
    publishers = [RulesPublisher(kafka, layout, published_by=f"p{i}") for i in range(3)]
    outcomes = await asyncio.gather(*(p.publish_version(with_canary(rules, 10 * i))
                                      for i, p in enumerate(publishers)), return_exceptions=True)
    won = [o for o in outcomes if not isinstance(o, BaseException)]
    assert all(isinstance(o, RulesConflict) for o in outcomes if isinstance(o, BaseException)), outcomes
    assert won, outcomes
    history = await publishers[0].history()
    # Every publish that reported success is on the topic under its own version, and only those.
    assert sorted(p.record.version for p in won) == [r.version for r in history]
    for p in won:
        assert (await publishers[0].get(p.record.version)).published_by == p.record.published_by


async def test_hot_reload_mid_stream_loses_and_duplicates_nothing(kafka, layout, rules, registry):
    """The issue's acceptance test: canary 0 % -> 50 % mid-stream, then a rollback."""
    publisher = RulesPublisher(kafka, layout, published_by="acceptance")
    before, after = with_canary(rules, 0), with_canary(rules, 50)
    assert (await publisher.publish(before)).version == 1
    in_force = {1: None, 2: None, 3: None}
    users = [f"u-{i}" for i in range(100)]

    async with Pipeline(kafka, layout, rules, registry) as pipeline:
        await pipeline.wait_ready()
        assert pipeline.rules.version == 1  # the topic's version, not the fallback file's
        in_force[1] = pipeline.rules()
        async with TopicTail(kafka, [layout.replies("demo")]) as replies, \
                ScoreClient(kafka, "demo", layout=layout) as client:
            results: list = []
            sent: list = []
            stop = asyncio.Event()

            async def stream() -> None:
                # DE users: no experiment matches, so only the canary moves anyone.
                while not stop.is_set():
                    batch = [client.request("title-ranking", {"user_id": u, "country": "DE"},
                                            {"titles": ["t-1", "t-2", "t-3"]}) for u in users[:20]]
                    users.append(users.pop(0))  # rotate: every user comes by again and again
                    sent.extend(batch)
                    results.extend(await client.score_many(batch, timeout=60, return_exceptions=False))

            async def until(condition, timeout=60.0) -> None:
                deadline = asyncio.get_running_loop().time() + timeout
                while not condition():
                    assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
                    await asyncio.sleep(0.05)

            streaming = asyncio.create_task(stream())
            try:
                await until(lambda: len(results) >= 100)
                in_force[2] = await publisher.publish(after)
                await until(lambda: sum(r.rules_version == 2 for r in results) >= 200)
                in_force[3] = await publisher.rollback(1)
                await until(lambda: sum(r.rules_version == 3 for r in results) >= 200)
            finally:
                stop.set()
                await streaming
            assert await replies.wait_for(lambda: len(replies.records) >= len(sent), timeout=30)

    # Nothing lost, nothing doubled: every request has exactly one result, here and on the topic.
    assert [r.request_id for r in results] == [r.request_id for r in sent]
    assert Counter(r.status for r in results) == {Status.OK: len(sent)}
    on_topic = Counter(codec.decode_result(r.value).request_id for r in replies.records)
    assert set(on_topic) == {r.request_id for r in sent} and set(on_topic.values()) == {1}

    # Every result names the version that routed it, and got exactly that version's model.
    assert {r.rules_version for r in results} == {1, 2, 3}
    model_of = {}
    for request, result in zip(sent, results):
        view = RequestView(request.request_id, request.objective, request.client, request.reply_to,
                           request.context["user_id"], request.context)
        assert result.model == route(view, in_force[result.rules_version]).model
        model_of[(result.rules_version, request.context["user_id"])] = result.model
    moved = {u for (v, u), m in model_of.items() if v == 2 and m == "title-ranking@v2"}
    assert moved and {m for (v, _), m in model_of.items() if v in (1, 3)} == {"title-ranking@v1"}
    # The rollback gives the users the canary took back to their old model.
    assert all(model_of[(3, u)] == model_of[(1, u)] == "title-ranking@v1"
               for u in moved if (3, u) in model_of and (1, u) in model_of)
    assert any((3, u) in model_of for u in moved)
