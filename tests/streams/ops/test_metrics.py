"""Prometheus metrics: per-batch tallies (pure) and a running pipeline's endpoint after traffic (broker)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from types import SimpleNamespace

import pytest
from aiokafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from streams_testing import free_port, http_get, samples

from streams.client.score_client import ScoreClient
from streams.ops.http import MetricsServer, port_free
from streams.ops.metrics import PipelineMetrics, ServiceMetrics
from streams.services.pipeline import Pipeline, PipelineOptions
from workflows import sample_items


class _FakeService:
    role = "worker"
    shard = "s1"
    group_id = "g"
    consumer = None
    failed = None

    def __init__(self) -> None:
        self.metrics = ServiceMetrics(self)  # as BatchService does


def _record(offset: int):
    return SimpleNamespace(offset=offset, headers=(), timestamp=0)


def test_the_registry_state_is_read_at_scrape_time(facts_registry):
    """Bytes held against the budget, loads, failures and evictions: what the memory budget is doing."""
    registry = facts_registry
    registry.get("title-ranking@v1")
    registry.get("fraud-score@v1")  # over the budget: title-ranking@v1 is evicted
    pipeline = SimpleNamespace(rules=lambda: SimpleNamespace(version=1), registry=registry, services=[])
    text = PipelineMetrics(pipeline).exposition().decode()
    assert samples(text, "scoreline_model_bytes", kind="held") == registry.bytes_held() > 0
    assert samples(text, "scoreline_model_bytes", kind="budget") == registry.memory_budget
    assert samples(text, "scoreline_model_registry_events_total", event="loads") == 2
    assert samples(text, "scoreline_model_registry_events_total", event="evictions") == 1
    assert samples(text, "scoreline_model_loaded", model="fraud-score@v1") == 1
    assert samples(text, "scoreline_model_load_seconds_count") == 2
    assert samples(text, "scoreline_model_load_seconds_bucket", le="+Inf") == 2
    assert samples(text, "scoreline_model_load_seconds_sum") == pytest.approx(registry.load_seconds)


@pytest.fixture
def facts_registry():
    from workflows import InMemoryFactStore, ModelRegistry
    from workflows.registry import default_facts_dir, default_models_dir, model_bytes

    facts = InMemoryFactStore.from_dir(default_facts_dir())
    probe = ModelRegistry(default_models_dir(), facts)
    budget = max(model_bytes(probe.get("title-ranking@v1")), model_bytes(probe.get("fraud-score@v1")))
    return ModelRegistry(default_models_dir(), facts, memory_budget=budget)


def test_tallies_reach_prometheus_once_per_batch():
    metrics = PipelineMetrics()
    service = _FakeService()
    metrics.bind([service])
    tally: ServiceMetrics = service.metrics
    for _ in range(3):
        tally.result("title-ranking", "title-ranking@v1", "ok", 12.0)
    tally.result("title-ranking", "title-ranking@v1", "error")
    tally.dead_letter("workflow_error")
    batch = {TopicPartition("t", 0): [_record(0), _record(1), _record(2), _record(3)]}
    tally.batch_done(batch, 0.0, 0.001, 0.002)
    text = metrics.exposition().decode()
    assert samples(text, "scoreline_results_total", status="ok", shard="s1") == 3
    assert samples(text, "scoreline_results_total", status="error") == 1
    assert samples(text, "scoreline_dead_letters_total", code="workflow_error") == 1
    assert samples(text, "scoreline_records_consumed_total") == 4
    assert samples(text, "scoreline_result_latency_seconds_count") == 3
    assert samples(text, "scoreline_result_latency_seconds_bucket", le="0.025") == 3
    assert samples(text, "scoreline_result_latency_seconds_bucket", le="0.01") == 0
    assert samples(text, "scoreline_result_latency_seconds_sum") == pytest.approx(0.036)
    assert tally.positions[TopicPartition("t", 0)] == 4


def test_a_failed_batch_counts_nothing_it_tallied():
    metrics = PipelineMetrics()
    service = _FakeService()
    metrics.bind([service])
    service.metrics.routed("fraud-score", "fraud-score@v1", None, "live", ["fraud-score@v2"])
    service.metrics.batch_failed()
    service.metrics.batch_done({TopicPartition("t", 0): [_record(0)]}, 0.0, 0.0, 0.0)
    text = metrics.exposition().decode()
    assert samples(text, "scoreline_requests_routed_total") == 0
    assert samples(text, "scoreline_shadow_copies_total") == 0
    assert samples(text, "scoreline_batch_failures_total") == 1


def test_pipelines_in_one_process_keep_their_own_figures():
    first, second = PipelineMetrics(), PipelineMetrics()
    a, b = _FakeService(), _FakeService()
    first.bind([a])
    second.bind([b])
    a.metrics.result("o", "m", "ok")
    a.metrics.batch_done({TopicPartition("t", 0): [_record(0)]}, 0.0, 0.0, 0.0)
    assert samples(first.exposition().decode(), "scoreline_results_total") == 1
    assert samples(second.exposition().decode(), "scoreline_results_total") == 0


async def test_the_http_endpoints_without_a_broker():
    metrics = PipelineMetrics()
    async with MetricsServer(metrics, port=0, host="127.0.0.1") as server:
        assert not port_free(server.port, "127.0.0.1")
        status, text = await http_get(server.port, "/metrics")
        assert status == 200 and "scoreline_results_total" in text
        assert await http_get(server.port, "/healthz") == (200, "ok\n")
        assert await http_get(server.port, "/readyz") == (503, "no roles started\n")
        assert (await http_get(server.port, "/elsewhere"))[0] == 404
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST /metrics HTTP/1.1\r\n\r\n")
        assert (await reader.read()).startswith(b"HTTP/1.1 405")
        writer.close()


def test_the_run_command_skips_a_busy_default_port_but_not_an_asked_one(monkeypatch):
    from scoreline.commands import run

    monkeypatch.delenv("SCORELINE_METRICS_PORT", raising=False)
    monkeypatch.setattr(run, "port_free", lambda port: False)
    assert run.metrics_port(None) is None
    assert run.metrics_port(9999) == 9999
    assert run.metrics_port(0) is None
    monkeypatch.setattr(run, "port_free", lambda port: True)
    assert run.metrics_port(None) == run.DEFAULT_METRICS_PORT
    monkeypatch.setenv("SCORELINE_METRICS_PORT", "0")
    assert run.metrics_port(None) is None


@pytest.mark.kafka
async def test_a_running_pipeline_serves_counters_matching_the_requests_sent(kafka, layout, shadow_all_rules,
                                                                              registry):
    port = free_port()
    options = PipelineOptions(metrics_port=port, follow_rules=False)
    async with Pipeline(kafka, layout, shadow_all_rules, registry, options) as pipeline:
        status, body = await http_get(port, "/healthz")
        assert status == 200, body
        await pipeline.wait_ready()
        async with ScoreClient(kafka, "demo", layout=layout) as client:
            requests = [client.request("title-ranking", item.context, item.payload)
                        for item in sample_items("title-ranking", 50, seed=3)]
            results = await client.score_many(requests, timeout=60, return_exceptions=False)
        sent = Counter((r.objective, r.model) for r in results)

        # Counters move when a batch is committed, just after its replies: wait for them.
        deadline = time.monotonic() + 30
        while True:
            status, text = await http_get(port, "/metrics")
            worker_ok = samples(text, "scoreline_results_total", role="worker", status="ok")
            if worker_ok >= len(requests) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert status == 200
        for (objective, model), n in sent.items():
            assert samples(text, "scoreline_results_total", role="worker", objective=objective, model=model,
                           status="ok") == n
            assert samples(text, "scoreline_requests_routed_total", objective=objective, model=model) == n
            assert samples(text, "scoreline_result_latency_seconds_count", role="worker", objective=objective,
                           model=model) == n
        assert samples(text, "scoreline_results_total", status="error") == 0
        assert samples(text, "scoreline_shadow_copies_total", objective="title-ranking") == \
            sent[("title-ranking", "title-ranking@v1")]
        assert samples(text, "scoreline_rules_version") == shadow_all_rules.version
        assert samples(text, "scoreline_model_loaded", model="title-ranking@v1") == 1
        # The shared request topics and each client's own pair (live and backfill).
        request_topics = 2 + 2 * len(shadow_all_rules.clients)
        routed = samples(text, "scoreline_assigned_partitions", role="router")
        assert routed == request_topics * layout.request_partitions
        # Every request answered and committed: nothing in hand (the gauge is there, per role, at zero).
        in_flight = [s for f in text_string_to_metric_families(text) for s in f.samples
                     if s.name == "scoreline_work_in_flight_records" and s.labels["role"] == "router"]
        assert in_flight and sum(s.value for s in in_flight) == 0
        lag_groups = {s.labels["group"] for f in text_string_to_metric_families(text) for s in f.samples
                      if s.name == "scoreline_consumer_lag_records"}
        assert any(".worker." in g for g in lag_groups)
        status, body = await http_get(port, "/readyz")
        assert status == 200, body
        assert (await http_get(port, "/nope"))[0] == 404
