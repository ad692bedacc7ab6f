"""The scoring pipeline end to end against a real broker: results, shadows, bad input, raw producers."""

from __future__ import annotations

from collections import Counter

import orjson
import pytest

from schemas import codec
from schemas.messages import Status
from scoreline.demo import BAD_KINDS, DemoPlan, run_demo
from streams.client.score_client import ScoreClient
from streams.services.pipeline import Pipeline
from streams.transport.admin import ensure_topics
from streams.transport.kafka import aiokafka_producer
from streams.transport.tail import TopicTail
from workflows import sample_items

pytestmark = pytest.mark.kafka


async def test_every_request_gets_exactly_one_result(kafka, layout, rules, registry):
    async with Pipeline(kafka, layout, rules, registry) as pipeline:
        await pipeline.wait_ready()
        async with TopicTail(kafka, [layout.replies("demo")]) as replies, \
                ScoreClient(kafka, "demo", layout=layout) as client:
            requests = [client.request(objective, item.context, item.payload)
                        for objective in ("title-ranking", "fraud-score")
                        for item in sample_items(objective, 60, seed=1)]
            results = await client.score_many(requests, timeout=60, return_exceptions=False)
            assert await replies.wait_for(lambda: len(replies.records) >= len(requests), timeout=30)

    assert [r.request_id for r in results] == [r.request_id for r in requests]
    assert Counter(r.status for r in results) == {Status.OK: len(requests)}
    for request, result in zip(requests, results):
        assert result.objective == request.objective
        assert result.model.startswith(request.objective + "@")
        assert result.rules_version == rules.version
        assert result.shard == rules.shard_of(result.model)
    rankings = [r.result["ranking"] for r in results if r.objective == "title-ranking"]
    assert all(ranking and {"title", "score"} <= ranking[0].keys() for ranking in rankings)
    on_topic = Counter(codec.decode_result(r.value).request_id for r in replies.records)
    assert set(on_topic) == {r.request_id for r in requests}
    assert set(on_topic.values()) == {1}


async def test_shadowed_requests_give_one_primary_and_one_shadow_record(kafka, layout, shadow_all_rules, registry):
    async with Pipeline(kafka, layout, shadow_all_rules, registry) as pipeline:
        await pipeline.wait_ready()
        async with TopicTail(kafka, [layout.shadow_results]) as sides, \
                TopicTail(kafka, [layout.replies("demo")]) as replies, \
                ScoreClient(kafka, "demo", layout=layout) as client:
            requests = [client.request("title-ranking", i.context, i.payload)
                        for i in sample_items("title-ranking", 40, seed=2)]
            results = await client.score_many(requests, timeout=60, return_exceptions=False)
            assert await sides.wait_for(lambda: len(sides.records) >= 2 * len(requests), timeout=30)

    records = [codec.decode_shadow_result(r.value) for r in sides.records]
    by_role = {role: Counter(s.request_id for s in records if s.role == role) for role in ("primary", "shadow")}
    ids = {r.request_id for r in requests}
    assert set(by_role["primary"]) == ids and set(by_role["primary"].values()) == {1}
    assert set(by_role["shadow"]) == ids and set(by_role["shadow"].values()) == {1}
    assert {s.model for s in records if s.role == "shadow"} == {"title-ranking@v2"}
    assert {s.model for s in records if s.role == "primary"} == {"title-ranking@v1"}
    # The shadow never answers the client: every reply comes from the primary model, once.
    assert {r.model for r in results} == {"title-ranking@v1"}
    assert Counter(codec.decode_result(r.value).request_id for r in replies.records) == Counter(ids)


async def test_raw_json_without_headers_is_scored(kafka, layout, rules, registry):
    """What kcat or any plain producer sends: a JSON body, no key, no headers."""
    body = {"request_id": "raw-1", "objective": "title-ranking", "client": "demo",
            "reply_to": layout.replies("demo"), "context": {"user_id": "u-1", "country": "US"},
            "payload": {"titles": ["t-1", "t-2", "t-3"]}}
    async with Pipeline(kafka, layout, rules, registry) as pipeline:
        await pipeline.wait_ready()
        async with TopicTail(kafka, [layout.replies("demo")]) as replies:
            producer = aiokafka_producer(kafka, "test-raw")
            await producer.start()
            try:
                await producer.send_and_wait(layout.requests, orjson.dumps(body))
            finally:
                await producer.stop()
            assert await replies.wait_for(lambda: replies.records, timeout=30)
    result = codec.decode_result(replies.records[0].value)
    assert (result.request_id, result.status) == ("raw-1", Status.OK)
    assert result.result["ranking"]


async def test_bad_input_ends_where_the_contract_says(kafka, layout, rules, registry):
    await ensure_topics(kafka.bootstrap, layout.specs(rules.shards))
    async with TopicTail(kafka, [layout.deadletter]) as letters:
        summary = await run_demo(kafka, layout, rules, registry, DemoPlan(requests=20, bad_per_kind=2, timeout=60))
    assert summary["missing"] == 0, summary
    assert summary["duplicates"] == 0, summary
    assert summary["bad_sent"] == 2 * len(BAD_KINDS)
    # Every objective's 20 answered (three: the ONNX churn-risk too); unknown objective and wrong type reply.
    assert summary["results"] == {"ok": 20 * len(rules.objectives), "error": 4, "expired": 2}
    assert {o: e["results"]["ok"] for o, e in summary["by_objective"].items() if o in rules.objectives} == {
        "title-ranking": 20, "fraud-score": 20, "churn-risk": 20}
    assert summary["by_objective"]["churn-risk"]["models"] == {"churn-risk@v1": 20}
    assert summary["dead_letters_by_code"] == {"malformed_json": 2, "unknown_objective": 2, "wrong_type": 2,
                                               "forbidden_reply_to": 2, "payload_too_large": 2}
    decoded = [codec.decode_dead_letter(r.value) for r in letters.records]
    wrong_type = next(d for d in decoded if d.code == "wrong_type")
    assert wrong_type.field == "context" and wrong_type.stage == "router"
    malformed = next(d for d in decoded if d.code == "malformed_json")
    assert malformed.original().startswith(b'{"request_id"')  # the original bytes, kept for replay


async def test_the_reference_models_are_served_end_to_end(kafka, layout, reference_dir):
    """What ``scoreline demo --models reference`` runs: the three models of realistic size, every request answered."""
    from routing import parse_rules
    from workflows import InMemoryFactStore, ModelRegistry
    from workflows.training.reference import OBJECTIVES, reference_rules

    rules = parse_rules(reference_rules(layout.prefix))
    registry = ModelRegistry(reference_dir / "models", InMemoryFactStore())
    await ensure_topics(kafka.bootstrap, layout.specs(rules.shards))
    summary = await run_demo(kafka, layout, rules, registry, DemoPlan(requests=30, bad_per_kind=1, timeout=90))
    assert summary["missing"] == 0 and summary["duplicates"] == 0, summary
    assert {o: e["models"] for o, e in summary["by_objective"].items() if o in OBJECTIVES} == {
        o: {f"{o}@v1": 30 + (o == "ranker-gbdt")} for o in OBJECTIVES}  # the bad inputs' expired one: the ranker's
    assert summary["results"] == {"ok": 30 * len(OBJECTIVES), "error": 2, "expired": 1}
