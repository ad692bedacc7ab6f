"""On a real broker: a workflow call longer than the group's session timeout no longer costs the worker its group.

Scoring runs on the scoring threads, so the event loop goes on sending the group's heartbeats while the
model computes. On the loop (as before), a 12 s call with a 10 s session timeout had the broker evict
the worker: a rebalance, a new generation and the batch replayed.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from streams_testing import eventually, model_package

from routing import parse_rules
from schemas.messages import Status
from streams.client.score_client import ScoreClient
from streams.services.pipeline import Pipeline, PipelineOptions
from streams.services.worker import Worker
from workflows import InMemoryFactStore, ModelRegistry
from workflows.skeleton import new_package

pytestmark = pytest.mark.kafka

CALL_S = 12.0
"""Longer than the workers' session timeout (``KafkaSettings``: 10 s)."""


def slow_package(models, model_id: str, objective: str) -> None:
    model_package(models, model_id, objective, serving={"time_limit_ms": 60_000}, code=f"""
        import time as _time
        _Base = Slow
        class Slow(_Base):
            def predict(self, features):
                _time.sleep({CALL_S})  # the model's own compute, as a GIL-releasing runtime spends it
                return super().predict(features)
        """)


async def test_a_call_longer_than_the_session_timeout_keeps_the_worker_in_its_group_and_others_answering(
        kafka, layout, tmp_path):
    """The slow model's call runs 12 s; meanwhile the same worker answers another objective's requests, one
    after another, and stays in its group (same generation, same partitions)."""
    models = tmp_path / "models"
    slow_package(models, "slow@v1", "slow")
    new_package(models, "fast@v1", "fast")
    rules = dataclasses.replace(parse_rules({
        "shards": {"s1": {}}, "models": {"slow@v1": {"shard": "s1"}, "fast@v1": {"shard": "s1"}},
        "clients": {"demo": {"objectives": ["*"], "reply_topics": [layout.replies("demo")]}},
        "objectives": {"slow": {"shard_key": "context.user_id", "default": "slow@v1"},
                       "fast": {"shard_key": "context.user_id", "default": "fast@v1"}}}), version=1)
    registry = ModelRegistry(models, InMemoryFactStore())
    options = PipelineOptions(roles=("router", "worker"), follow_rules=False)
    async with Pipeline(kafka, layout, rules, registry, options) as pipeline:
        await pipeline.wait_ready()
        [worker] = [s for s in pipeline.services if isinstance(s, Worker)]
        coordinator = worker.consumer.kafka._coordinator  # what only Kafka has: the member's generation
        generation, assigned = coordinator.generation, worker.consumer.assignment()
        async with ScoreClient(kafka, "demo", layout=layout) as client:
            slow = asyncio.create_task(client.score("slow", context={"user_id": "u-1"}, payload={"x": 1}, timeout=60))
            assert await eventually(lambda: worker._lanes.in_flight() == 1, timeout=30)
            fast = [await client.score("fast", context={"user_id": "u-1"}, payload={"x": i}, timeout=30)
                    for i in range(20)]  # the same user: the same partition as the slow request
            assert not slow.done(), "the slow call ended before the other objective's requests were answered"
            result = await slow
        assert [r.status for r in fast] == [Status.OK] * 20
        assert result.status == Status.OK, result
        assert result.timings_ms["scored"] >= CALL_S * 1000
        assert coordinator.generation == generation
        assert worker.consumer.assignment() == assigned
        assert worker.failed is None
