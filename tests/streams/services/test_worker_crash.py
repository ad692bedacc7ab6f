"""Killing a worker process mid-stream (SIGKILL) and starting another loses no request."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter

import orjson
import pytest
from streams_testing import wait_for_log

from routing import rules_to_doc
from schemas import codec
from schemas.messages import Status
from streams.client.score_client import ScoreClient
from streams.services.pipeline import Pipeline, PipelineOptions
from streams.transport.tail import TopicTail
from workflows import sample_items

pytestmark = pytest.mark.kafka


def start_worker(kafka, layout, rules_file, log_file) -> subprocess.Popen:
    """``scoreline run --role worker`` as a separate process, as an operator would start it."""
    return subprocess.Popen(
        [sys.executable, "-m", "scoreline", "run", "--role", "worker", "--bootstrap", kafka.bootstrap,
         "--prefix", layout.prefix, "--rules", str(rules_file)],
        stdout=subprocess.DEVNULL, stderr=open(log_file, "ab"), env={**os.environ, "SCORELINE_LOG_LEVEL": "INFO"},
    )


async def test_sigkill_a_worker_mid_stream_loses_nothing(kafka, layout, rules, registry, tmp_path):
    rules_file = tmp_path / "rules.json"
    rules_file.write_bytes(orjson.dumps(rules_to_doc(rules)))
    log_file = tmp_path / "worker.log"
    log_file.touch()
    total = 600
    requests_sent: list[str] = []

    async with Pipeline(kafka, layout, rules, registry, PipelineOptions(roles=("router",))) as pipeline:
        await pipeline.wait_ready()
        first = start_worker(kafka, layout, rules_file, log_file)
        second = None
        try:
            await wait_for_log(log_file, "scoreline running on", timeout=60)
            async with TopicTail(kafka, [layout.replies("demo")]) as replies, \
                    ScoreClient(kafka, "demo", layout=layout) as client:
                items = (sample_items("title-ranking", total // 2, seed=5)
                         + sample_items("fraud-score", total // 2, seed=5))
                objectives = ["title-ranking"] * (total // 2) + ["fraud-score"] * (total // 2)
                for i, (objective, item) in enumerate(zip(objectives, items)):
                    requests_sent.append(await client.submit(objective, item.context, item.payload))
                    if i == total // 3:
                        # Only kill once the worker has answered something: a crash mid-stream, not before it.
                        assert await replies.wait_for(lambda: len(replies.records) > 0, timeout=30)
                        first.send_signal(signal.SIGKILL)
                        first.wait(timeout=10)
                        second = start_worker(kafka, layout, rules_file, log_file)
                    if i % 20 == 0:
                        await asyncio.sleep(0.01)  # a steady stream, not one burst
                ids = set(requests_sent)
                seen = lambda: {codec.decode_result(r.value).request_id for r in replies.records}  # noqa: E731
                assert await replies.wait_for(lambda: ids <= seen(), timeout=120), \
                    f"{len(ids - seen())} of {total} requests have no result"
        finally:
            for proc in (first, second):
                if proc is not None and proc.poll() is None:
                    proc.terminate()
                    proc.wait(timeout=30)

    results = [codec.decode_result(r.value) for r in replies.records]
    counts = Counter(r.request_id for r in results)
    assert set(counts) == ids  # nothing lost, nothing foreign
    assert all(r.status == Status.OK for r in results)
    # At-least-once: a replayed batch may answer twice, always with the same request id and model.
    duplicated = [rid for rid, n in counts.items() if n > 1]
    by_id: dict[str, set[str]] = {}
    for r in results:
        by_id.setdefault(r.request_id, set()).add(r.model)
    assert all(len(by_id[rid]) == 1 for rid in duplicated)
