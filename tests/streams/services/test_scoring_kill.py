"""On a real broker: ``kill -9`` a worker process while a workflow call is in flight and requests queue behind it.

The worker pipelines: while a model's call scores one batch, the next batches are fetched, decoded and
queued, and the answers of the one before are produced and committed. The commit stops at the lowest
request not answered yet, so a kill at any point loses nothing: the next worker replays from there.
What this checks, per user (one shard partition, one model): every request answered, the first answer
of each in the order they were sent, and a replayed answer byte for byte the first one.

The model's ``predict`` logs each call's start and end to a file, so "a call is in flight" is a state
the test reads, not a moment it guesses.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import defaultdict

import orjson
import pytest
from streams_testing import eventually, model_package, wait_for_log

from routing import parse_rules
from schemas import codec
from schemas.messages import Status
from streams.client.score_client import ScoreClient
from streams.services.pipeline import Pipeline, PipelineOptions
from streams.transport.admin import ensure_topics
from streams.transport.tail import TopicTail
from workflows import InMemoryFactStore, ModelRegistry

pytestmark = pytest.mark.kafka

USERS, PER_USER = 8, 40
CALL_S = 0.15


def paced_package(models, calls_log) -> None:
    """``paced@v1``: each call takes ``CALL_S``, holds at most 8 requests, and logs ``start`` and ``end`` lines to
    ``calls_log``: 320 requests make 40 calls or more."""
    model_package(models, "paced@v1", "paced", serving={"max_batch_cost": 8}, code=f"""
        import time as _time
        _Base = Paced
        class Paced(_Base):
            def predict(self, features):
                with open({str(calls_log)!r}, "a") as log:
                    log.write("start\\n")
                _time.sleep({CALL_S})
                scores = super().predict(features)
                with open({str(calls_log)!r}, "a") as log:
                    log.write("end\\n")
                return scores
        """)


def start_worker(kafka, layout, tmp_path, models, rules_file, log_path) -> subprocess.Popen:
    env = {**os.environ, "SCORELINE_LOG_LEVEL": "INFO", "SCORELINE_METRICS_PORT": "0",
           "SCORELINE_SHARD_PARTITIONS": str(layout.shard_partitions),
           "SCORELINE_REQUEST_PARTITIONS": str(layout.request_partitions),
           "SCORELINE_REPLY_PARTITIONS": str(layout.reply_partitions)}
    with log_path.open("ab") as log:
        return subprocess.Popen([sys.executable, "-m", "scoreline", "run", "--role", "worker", "--bootstrap",
                                 kafka.bootstrap, "--prefix", layout.prefix, "--rules", str(rules_file),
                                 "--models-dir", str(models)], stdout=subprocess.DEVNULL, stderr=log, env=env)


async def test_kill_9_mid_call_loses_nothing_and_keeps_each_users_order(kafka, layout, tmp_path):
    models, calls_log = tmp_path / "models", tmp_path / "calls.log"
    paced_package(models, calls_log)
    doc = {"version": 1, "shards": {"s1": {}}, "models": {"paced@v1": {"shard": "s1"}},
           "clients": {"demo": {"objectives": ["*"], "reply_topics": [layout.replies("demo")]}},
           "objectives": {"paced": {"shard_key": "context.user_id", "default": "paced@v1"}}}
    rules = parse_rules(doc)
    rules_file = tmp_path / "rules.json"
    rules_file.write_text(json.dumps(doc))
    await ensure_topics(kafka.bootstrap, layout.specs(rules.shards))
    registry = ModelRegistry(models, InMemoryFactStore())
    worker_log = tmp_path / "worker.log"
    workers = [start_worker(kafka, layout, tmp_path, models, rules_file, worker_log)]
    try:
        await wait_for_log(worker_log, "scoreline running", 90, workers[0])
        async with Pipeline(kafka, layout, rules, registry, PipelineOptions(roles=("router",))) as pipeline, \
                TopicTail(kafka, [layout.replies("demo")]) as replies, \
                ScoreClient(kafka, "demo", layout=layout, reply_partition=0) as client:
            await pipeline.wait_ready()
            sent = []
            for i in range(PER_USER):  # every user's requests in order, the users interleaved
                for u in range(USERS):
                    await client.submit("paced", {"user_id": f"u-{u}"}, {"x": i}, request_id=f"u-{u}-{i}")
                    sent.append(f"u-{u}-{i}")

            def calls() -> list[str]:
                return calls_log.read_text().split() if calls_log.exists() else []
            # The fourth call has started and not ended: a call in flight, later requests queued behind it.
            assert await eventually(lambda: calls().count("start") >= 4, timeout=60)
            workers[0].send_signal(signal.SIGKILL)
            workers[0].wait(timeout=10)
            in_flight_at_kill = calls().count("start") - calls().count("end")
            answered_at_kill = len(replies.records)
            workers.append(start_worker(kafka, layout, tmp_path, models, rules_file, worker_log))
            ids = lambda: {codec.decode_result(r.value).request_id for r in replies.records}  # noqa: E731
            assert await replies.wait_for(lambda: ids() >= set(sent), timeout=120), \
                f"{len(set(sent) - ids())} of {len(sent)} requests never answered"
            await replies.wait_for(lambda: False, timeout=2)  # a late repeat would land now
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()

    assert in_flight_at_kill >= 1, "the kill did not land while a call was in flight"  # two: the model is alone
    assert answered_at_kill < len(sent), "the kill did not land mid-stream"
    assert {r.partition for r in replies.records} == {0}  # one reply partition: its order is the produce order
    first: dict[str, bytes] = {}
    order: dict[str, list[int]] = defaultdict(list)
    for record in replies.records:
        result = codec.decode_result(record.value)
        assert result.status == Status.OK, result
        body = orjson.dumps(result.result)
        if result.request_id in first:
            assert first[result.request_id] == body  # a replayed answer is the same answer
            continue
        first[result.request_id] = body
        user, index = result.request_id.rsplit("-", 1)
        order[user].append(int(index))
    assert set(first) == set(sent)
    assert all(indices == sorted(indices) for indices in order.values()), order
    print(f"killed with {answered_at_kill} of {len(sent)} answered; "
          f"{len(replies.records) - len(sent)} answered again after the restart")
