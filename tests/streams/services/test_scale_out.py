"""Scale-out with processes: two ``scoreline run --role worker --shard s2`` share the shard and both serve.

In the shipped rules every ``fraud-score`` request is answered by ``fraud-score@v1`` on shard s2
(its shadow copies go to the shadow topic, which no one here consumes).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from prometheus_client.parser import text_string_to_metric_families
from streams_testing import free_port, http_get, samples

from schemas.messages import Status
from scoreline.settings import EXAMPLES_DIR
from streams.client.score_client import ScoreClient
from streams.services.pipeline import Pipeline, PipelineOptions
from streams.topics import TopicLayout
from workflows import sample_items

pytestmark = pytest.mark.kafka

SHARD_PARTITIONS = 4


def _start_worker(layout: TopicLayout, rules_file: str, port: int, bootstrap: str) -> subprocess.Popen:
    env = dict(os.environ, SCORELINE_BOOTSTRAP=bootstrap, SCORELINE_SHARD_PARTITIONS=str(SHARD_PARTITIONS),
               SCORELINE_REQUEST_PARTITIONS="2", SCORELINE_REPLY_PARTITIONS="2", SCORELINE_LOG_LEVEL="WARNING")
    return subprocess.Popen(
        [sys.executable, "-m", "scoreline", "run", "--role", "worker", "--shard", "s2", "--prefix", layout.prefix,
         "--rules", rules_file, "--metrics-port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def _wait_ready(procs: list[subprocess.Popen], ports: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = set(ports)
    while pending:
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"worker exited {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
        for port in list(pending):
            try:
                status, _ = await http_get(port, "/readyz")
            except OSError:
                continue
            if status == 200:
                pending.discard(port)
        if time.monotonic() > deadline:
            raise AssertionError(f"workers on {sorted(pending)} not ready within {timeout}s")
        await asyncio.sleep(0.2)


def _owned(text: str) -> set[tuple[str, str]]:
    return {(s.labels["topic"], s.labels["partition"]) for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == "scoreline_consumer_lag_records"}


async def test_two_worker_processes_split_a_shards_partitions_and_both_serve(kafka, layout, registry, tmp_path):
    layout = TopicLayout(prefix=layout.prefix, request_partitions=2, shard_partitions=SHARD_PARTITIONS,
                         reply_partitions=2)  # same prefix: the fixture still deletes every topic
    rules_file = tmp_path / "rules.json"
    rules_file.write_text((EXAMPLES_DIR / "rules.json").read_text().replace(
        '"scoreline.replies.', f'"{layout.prefix}replies.'))
    from routing import load_rules

    rules = load_rules(rules_file)
    ports = [free_port(), free_port()]
    # The router (in this process) creates every topic before the workers join.
    async with Pipeline(kafka, layout, rules, registry, PipelineOptions(
            roles=("router",), follow_rules=False)) as router:
        await router.wait_ready()
        procs = [_start_worker(layout, str(rules_file), port, kafka.bootstrap) for port in ports]
        try:
            await _wait_ready(procs, ports, timeout=120)
            async with ScoreClient(kafka, "demo", layout=layout) as client:
                requests = [client.request("fraud-score", i.context, i.payload)
                            for i in sample_items("fraud-score", 200, seed=5)]
                results = await client.score_many(requests, timeout=60, return_exceptions=False)
            assert Counter(r.status for r in results) == {Status.OK: len(requests)}
            assert {r.shard for r in results} == {"s2"}

            deadline = time.monotonic() + 30
            while True:
                texts = [(await http_get(port, "/metrics"))[1] for port in ports]
                served = [samples(t, "scoreline_results_total", role="worker", status="ok") for t in texts]
                if sum(served) >= len(requests) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    owned = [_owned(t) for t in texts]
    assigned = [samples(t, "scoreline_assigned_partitions", role="worker") for t in texts]
    print(f"scale-out: results served per process {served}, partitions assigned per process {assigned}, "
          f"owned {[sorted(o) for o in owned]}")
    assert all(n > 0 for n in served), served  # both processes served
    assert sum(served) == len(requests)  # and between them, every request exactly once
    assert all(n > 0 for n in assigned) and sum(assigned) == 2 * SHARD_PARTITIONS  # live + backfill topics
    assert owned[0] and owned[1] and not owned[0] & owned[1]
