"""Tenant identity and limits against a real broker: the topic is the identity; noisy clients are limited."""

from __future__ import annotations

from collections import Counter

import orjson
import pytest

from routing import parse_rules, rules_to_doc
from schemas import codec
from streams.client.score_client import ScoreClient
from streams.services.pipeline import Pipeline, PipelineOptions
from streams.transport.kafka import aiokafka_producer
from streams.transport.tail import TopicTail
from workflows import sample_items

pytestmark = pytest.mark.kafka

ROUTER_ONLY = ("router", "worker")


async def _dead_letters(tail: TopicTail, count: int) -> list:
    assert await tail.wait_for(lambda: len(tail.records) >= count, timeout=30)
    return [codec.decode_dead_letter(r.value) for r in tail.records]


async def test_a_client_on_its_own_topic_is_served(kafka, layout, rules, registry):
    async with Pipeline(kafka, layout, rules, registry, PipelineOptions(roles=ROUTER_ONLY)) as pipeline:
        await pipeline.wait_ready()
        async with ScoreClient(kafka, "homepage", layout=layout, reply_to=f"{layout.prefix}replies.homepage-1",
                               own_topic=True) as client:
            item = sample_items("title-ranking", 1)[0]
            result = await client.score("title-ranking", item.context, item.payload, timeout=30)
    assert result.status == "ok"


async def test_a_request_on_another_clients_topic_is_rejected_without_reply(kafka, layout, rules, registry):
    """Client A (homepage) publishing to its own topic while naming client B (demo)."""
    body = {"request_id": "spoof-1", "objective": "title-ranking", "client": "demo",
            "reply_to": layout.replies("demo"), "context": {"user_id": "u-1"}, "payload": {"titles": ["t-1"]}}
    async with Pipeline(kafka, layout, rules, registry, PipelineOptions(roles=ROUTER_ONLY)) as pipeline:
        await pipeline.wait_ready()
        async with TopicTail(kafka, [layout.deadletter]) as letters, \
                TopicTail(kafka, [layout.replies("demo")]) as demo_replies:
            producer = aiokafka_producer(kafka, "test-spoof")
            await producer.start()
            try:
                await producer.send_and_wait(layout.client_requests("homepage"), orjson.dumps(body))
            finally:
                await producer.stop()
            (letter,) = await _dead_letters(letters, 1)
            # A follow-up the demo client really sends proves the reply topic was read past the spoof.
            async with ScoreClient(kafka, "demo", layout=layout) as demo:
                item = sample_items("title-ranking", 1)[0]
                assert (await demo.score("title-ranking", item.context, item.payload, timeout=30)).status == "ok"
    assert (letter.code, letter.field, letter.request_id) == ("identity_mismatch", "client", "spoof-1")
    assert "spoof-1" not in {codec.decode_result(r.value).request_id for r in demo_replies.records}


async def test_the_shared_topic_can_be_untrusted(kafka, layout, rules, registry):
    options = PipelineOptions(roles=ROUTER_ONLY, trust_client_field=False)
    async with Pipeline(kafka, layout, rules, registry, options) as pipeline:
        await pipeline.wait_ready()
        async with TopicTail(kafka, [layout.deadletter]) as letters:
            async with ScoreClient(kafka, "demo", layout=layout) as shared, \
                    ScoreClient(kafka, "demo", layout=layout, own_topic=True) as own:
                item = sample_items("title-ranking", 1)[0]
                await shared.submit("title-ranking", item.context, item.payload, request_id="shared-1")
                result = await own.score("title-ranking", item.context, item.payload, timeout=30)
            (letter,) = await _dead_letters(letters, 1)
    assert result.status == "ok"
    assert (letter.code, letter.request_id) == ("untrusted_client", "shared-1")


async def test_a_noisy_client_is_rate_limited_and_others_are_not(kafka, layout, rules, registry):
    doc = rules_to_doc(rules)
    doc["clients"]["demo"].update(rate_limit_rps=1, burst=10)
    limited = parse_rules(doc)
    async with Pipeline(kafka, layout, limited, registry, PipelineOptions(roles=ROUTER_ONLY)) as pipeline:
        await pipeline.wait_ready()
        async with ScoreClient(kafka, "demo", layout=layout) as noisy, \
                ScoreClient(kafka, "homepage", layout=layout, reply_to=f"{layout.prefix}replies.homepage-1") as calm:
            items = sample_items("title-ranking", 40, seed=3)
            noisy_results = await noisy.score_many(
                [noisy.request("title-ranking", i.context, i.payload) for i in items], timeout=60,
                return_exceptions=False)
            calm_results = await calm.score_many(
                [calm.request("title-ranking", i.context, i.payload) for i in items], timeout=60,
                return_exceptions=False)
    statuses = Counter((r.status, r.error.code if r.error else None) for r in noisy_results)
    # A burst of 10 and 1 more per second: most of 40 at once are refused, each with an answer.
    assert statuses[("ok", None)] >= 10
    assert statuses[("error", "rate_limited")] >= 20
    assert sum(statuses.values()) == 40
    assert Counter(r.status for r in calm_results) == {"ok": 40}
