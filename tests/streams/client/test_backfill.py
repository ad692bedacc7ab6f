"""Backfills and replays: the pure pieces, then whole runs against a real broker."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import orjson
import pytest

from schemas import codec
from schemas import headers as H
from schemas.errors import InvalidMessage
from schemas.messages import Traffic
from streams.client.backfill import (
    BackfillOptions,
    Progress,
    TokenBucket,
    backfill,
    parse_rate,
    parse_time,
    prepare_lines,
    read_done_lines,
    replay,
)
from streams.client.records import request_record
from streams.client.score_client import ScoreClient
from streams.services.pipeline import Pipeline
from streams.topics import TopicLayout
from streams.transport.admin import ensure_topics
from streams.transport.headers import headers_of
from streams.transport.kafka import aiokafka_producer
from streams.transport.tail import TopicTail
from workflows import sample_items

LAYOUT = TopicLayout(prefix="x.")


# --- pure ---------------------------------------------------------------------------


@pytest.mark.parametrize("text, rate", [("500", 500.0), ("500/s", 500.0), ("3000/m", 50.0), ("7200/h", 2.0),
                                        ("2.5/sec", 2.5), (None, None), ("unlimited", None)])
def test_rates(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["fast", "-5/s", "0", "10/fortnight"])
def test_bad_rates_name_the_option(text):
    with pytest.raises(InvalidMessage) as err:
        parse_rate(text)
    assert err.value.field == "rate" and err.value.code == "invalid_value"


def test_token_bucket_spends_its_burst_then_paces():
    now = [0.0]
    bucket = TokenBucket(100.0, burst=10, clock=lambda: now[0])
    assert [bucket.delay() for _ in range(10)] == [0.0] * 10
    assert bucket.delay() == pytest.approx(0.01)  # the 11th waits one token's time
    assert bucket.delay() == pytest.approx(0.02)
    now[0] = 1.0  # a quiet second refills, but never beyond the burst
    assert bucket.delay() == 0.0 and bucket.tokens == pytest.approx(9.0)


def test_token_bucket_averages_its_rate():
    now = [0.0]
    bucket = TokenBucket(50.0, clock=lambda: now[0])
    for _ in range(1000):
        now[0] += bucket.delay()
    assert now[0] == pytest.approx((1000 - bucket.burst) / 50.0)


def test_times():
    now = 1_764_000_000_000
    assert parse_time("now", now) == now
    assert parse_time("15m", now) == parse_time("-15m", now) == now - 900_000
    assert parse_time("1764000000", now) == now  # epoch seconds
    assert parse_time(str(now), now) == now
    assert parse_time("2025-11-24T16:00:00Z", now) == now
    assert parse_time("2025-11-24T16:00:00", now) == now  # naive means UTC
    assert parse_time("2025-11-24T17:00:00+01:00", now) == now
    with pytest.raises(InvalidMessage) as err:
        parse_time("yesterday", now, name="until")
    assert err.value.field == "until"


def test_progress_plain_lines_and_terminal_bar():
    now = [0.0]
    lines: list[str] = []
    bar = Progress(1000, lines.append, tty=False, every=2.0, clock=lambda: now[0])
    bar.update(0, 10)
    now[0] = 1.0
    bar.update(100, 200)  # throttled
    now[0] = 4.0
    bar.update(400, 600)
    assert len(lines) == 2 and lines[-1].endswith("\n") and "\r" not in lines[-1]
    assert "400/1,000" in lines[-1] and "100/s" in lines[-1] and "ETA 0:06" in lines[-1]
    assert "published 600" in lines[-1]
    tty: list[str] = []
    Progress(1000, tty.append, tty=True, clock=lambda: 0.0).finish(1000, 1000)
    assert tty[0].startswith("\r[" + "#" * 24 + "]") and "100%" in tty[0] and tty[-1] == "\n"


def _prepare(*lines: bytes, objective="title-ranking"):
    return list(prepare_lines(iter(lines), digest="abc", objective=objective, client="demo", layout=LAYOUT))


def test_lines_are_filled_in_and_forced_to_backfill():
    (line,) = _prepare(b'{"context": {"user_id": "u-1"}, "payload": {"titles": ["t-1"]}, "traffic": "live"}\n')
    request = line.request
    assert (line.number, line.request_id, request.request_id) == (1, "bf-abc-1", "bf-abc-1")
    assert (request.client, request.reply_to, request.objective) == ("demo", "x.replies.demo", "title-ranking")
    assert request.traffic == Traffic.BACKFILL
    (own,) = _prepare(b'{"request_id": "mine", "client": "homepage", "context": {}}')
    assert own.request_id == "mine" and own.request.reply_to == "x.replies.homepage"


def test_bad_lines_keep_their_number_and_say_why():
    lines = _prepare(b'{"context": {}}', b"", b"{not json", b"[1]", b'{"context": 3}',
                     b'{"objective": "fraud-score", "context": {}}', b'{"request_id": "bf-abc-1", "context": {}}')
    assert [(x.number, x.error and x.error.code) for x in lines] == [
        (1, None), (3, "malformed_json"), (4, "not_an_object"), (5, "wrong_type"), (6, "invalid_value"),
        (7, "invalid_value")]  # blank line 2 holds no request and is skipped
    assert lines[3].error.field == "context" and lines[4].error.field == "objective"
    assert "row 1" in lines[5].error.message


def test_done_lines_survive_a_torn_last_write(tmp_path: Path):
    out = tmp_path / "out.jsonl"
    assert read_done_lines(out) == set()
    out.write_bytes(b'{"line": 3, "status": "ok"}\n{"line": 1, "status": "ok"}\n{"line": 2, "sta')
    assert read_done_lines(out) == {1, 3}
    assert out.read_bytes().endswith(b'"ok"}\n')  # the torn line is gone; line 2 will be published again
    out.write_bytes(b"hello\n")
    with pytest.raises(InvalidMessage) as err:
        read_done_lines(out)
    assert err.value.field == "out"


# --- against a broker ----------------------------------------------------------------


def write_requests(path: Path, n: int, *, seed: int = 5, bad: dict[int, bytes] | None = None) -> Path:
    """A backfill file of ``n`` title-ranking requests (1-based ``bad`` lines replaced)."""
    items = sample_items("title-ranking", n, seed=seed)
    with path.open("wb") as f:
        for number, item in enumerate(items, start=1):
            line = (bad or {}).get(number) or orjson.dumps({"context": item.context, "payload": item.payload})
            f.write(line + b"\n")
    return path


@pytest.mark.kafka
async def test_a_backfill_of_ten_thousand_lines_yields_ten_thousand_result_lines(kafka, layout, rules, registry,
                                                                                  tmp_path):
    source = write_requests(tmp_path / "requests.jsonl", 10_000, bad={17: b"{oops", 4242: b'{"context": 1}'})
    out = tmp_path / "results.jsonl"
    async with Pipeline(kafka, layout, rules, registry) as pipeline:
        await pipeline.wait_ready()
        summary = await backfill(kafka, layout, BackfillOptions(source, "title-ranking", out=out, idle_timeout=30))
    rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert sorted(r["line"] for r in rows) == list(range(1, 10_001))
    assert summary["lines"] == 10_000 and summary["published"] == 9_998 and summary["unanswered"] == 0
    assert summary["malformed"] == {"count": 2, "lines": [17, 4242]}
    assert sum(summary["results"].values()) == 9_998
    by_line = {r["line"]: r for r in rows}
    assert by_line[17]["status"] == "error" and by_line[17]["error"]["code"] == "malformed_json"
    assert by_line[4242]["error"] == {"code": "wrong_type", "message": "context must be an object, got integer",
                                      "field": "context"}
    assert all(r["request_id"] == f"{summary['request_id_prefix']}{r['line']}" for r in rows)
    assert {r["traffic"] for r in rows} == {"backfill"}


@pytest.mark.kafka
async def test_a_resumed_backfill_publishes_only_what_has_no_result(kafka, layout, rules, registry, tmp_path):
    source = write_requests(tmp_path / "requests.jsonl", 300)
    out = tmp_path / "results.jsonl"
    async with Pipeline(kafka, layout, rules, registry) as pipeline:
        await pipeline.wait_ready()
        first = await backfill(kafka, layout, BackfillOptions(source, "title-ranking", out=out))
        kept = out.read_bytes().splitlines(keepends=True)[:120]
        out.write_bytes(b"".join(kept) + b'{"line": 9')  # as if killed mid-write after 120 results
        again = await backfill(kafka, layout, BackfillOptions(source, "title-ranking", out=out, resume=True))
        nothing = await backfill(kafka, layout, BackfillOptions(source, "title-ranking", out=out, resume=True))
    lines = Counter(orjson.loads(r)["line"] for r in out.read_bytes().splitlines())
    assert first["published"] == 300 and again["published"] == 180 and again["skipped"] == 120
    assert nothing["published"] == 0 and nothing["skipped"] == 300
    assert set(lines) == set(range(1, 301)) and set(lines.values()) == {1}


@pytest.mark.kafka
async def test_replay_republishes_exactly_the_time_range(kafka, layout):
    await ensure_topics(kafka.bootstrap, layout.specs([]))
    base = int(time.time() * 1000) - 60_000
    sent: dict[str, int] = {}
    producer = aiokafka_producer(kafka, "test-replay")
    await producer.start()
    try:
        async with ScoreClient(kafka, "demo", layout=layout) as client:
            for i in range(90):
                objective = "fraud-score" if i % 10 == 9 else "title-ranking"
                request = client.request(objective, {"user_id": f"u-{i}"}, {"titles": ["t-1"]},
                                         request_id=f"r-{i}", deadline_ms=base)
                topic, value, key, headers = request_record(layout, request, shard_key=f"u-{i}", reply_partition=1)
                ts = base + 1000 * (i // 30)  # three seconds of traffic, 30 requests each
                await producer.send(topic, value, key=key, headers=headers, timestamp_ms=ts)
                sent[request.request_id] = ts
                if i == 45:  # what a careless producer sent in the middle of the range
                    await producer.send(layout.requests, b"{broken", timestamp_ms=base + 1500)
            await producer.flush()
    finally:
        await producer.stop()
    async with TopicTail(kafka, [layout.requests_backfill]) as republished:
        summary = await replay(kafka, layout, layout.requests, base + 1000, base + 2000)
        assert await republished.wait_for(lambda: len(republished.records) >= summary["published"], 20)
        only = await replay(kafka, layout, layout.requests, base + 1000, base + 2000, objective="fraud-score",
                            new_ids=True)
        assert await republished.wait_for(lambda: len(republished.records) >= 30, 20)
    assert summary["scanned"] == 31 and summary["published"] == 30
    assert summary["skipped"] == {"other_objective": 0, "undecodable": 1, "out_of_range": 0}
    replayed = [codec.decode_request(r.value) for r in republished.records[:30]]
    assert {r.request_id for r in replayed} == {f"r-{i}" for i in range(30, 60)}
    assert {r.traffic for r in replayed} == {Traffic.BACKFILL} and {r.deadline_ms for r in replayed} == {None}
    headers = [headers_of(r.headers) for r in republished.records[:30]]
    assert {h[H.TRAFFIC] for h in headers} == {"backfill"} and not any(H.REPLY_PARTITION in h for h in headers)
    assert all(h[H.SHARD_KEY] == r.context["user_id"] for h, r in zip(headers, replayed))
    assert only["published"] == 3 and only["skipped"]["other_objective"] == 27
    renamed = [codec.decode_request(r.value) for r in republished.records[30:]]
    assert all(r.request_id.startswith("rp-") and r.objective == "fraud-score" for r in renamed)


# --- live latency while a backfill runs (figures, not assertions) -------------------------


async def live_latencies(client: ScoreClient, rate: float, seconds: float) -> list[float]:
    """Score live requests at a steady ``rate`` for ``seconds``; return each one's latency in ms."""
    items = sample_items("title-ranking", int(rate * seconds), seed=11)
    latencies: list[float] = []

    async def one(item) -> None:
        began = time.perf_counter()
        await client.score("title-ranking", item.context, item.payload, timeout=30)
        latencies.append((time.perf_counter() - began) * 1000)

    tasks = []
    start = time.perf_counter()
    for n, item in enumerate(items):
        await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))
        tasks.append(asyncio.ensure_future(one(item)))
    await asyncio.gather(*tasks)
    return latencies


_PIPELINE = """
import asyncio, sys, orjson
from routing import parse_rules
from scoreline.settings import EXAMPLES_DIR
from streams.transport.settings import KafkaSettings
from streams.services.pipeline import Pipeline
from streams.topics import TopicLayout
from workflows import ModelRegistry

async def main(bootstrap, prefix):
    layout = TopicLayout(prefix=prefix, request_partitions=2, shard_partitions=2, reply_partitions=2)
    text = (EXAMPLES_DIR / "rules.json").read_text().replace('"scoreline.replies.', f'"{prefix}replies.')
    async with Pipeline(KafkaSettings(bootstrap), layout, parse_rules(orjson.loads(text)),
                        ModelRegistry.default()) as pipeline:
        await pipeline.wait_ready()
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the test closes stdin

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.mark.kafka
async def test_live_latency_with_and_without_a_concurrent_backfill(kafka, layout, tmp_path, record_property):
    """Live p50/p99 at a steady 100 requests/s, alone and beside an unthrottled backfill.

    As deployed: the pipeline, the backfill and the live client are three processes.
    Prints the figures (run with ``-s``); asserts only that everything was answered.
    """
    source = write_requests(tmp_path / "requests.jsonl", 8_000, seed=12)
    env = {**os.environ, "SCORELINE_BOOTSTRAP": kafka.bootstrap, "SCORELINE_TOPIC_PREFIX": layout.prefix,
           "SCORELINE_REQUEST_PARTITIONS": "2", "SCORELINE_SHARD_PARTITIONS": "2", "SCORELINE_REPLY_PARTITIONS": "2"}
    pipeline = await asyncio.create_subprocess_exec(sys.executable, "-c", _PIPELINE, kafka.bootstrap, layout.prefix,
                                                    env=env, stdin=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.PIPE)
    try:
        assert await asyncio.wait_for(pipeline.stdout.readline(), 60) == b"ready\n"
        async with ScoreClient(kafka, "demo", layout=layout, reply_partition=0) as client:
            await live_latencies(client, 50, 1)  # warm up connections and models
            alone = await live_latencies(client, 100, 3)
            backfill_run = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "scoreline", "backfill", str(source), "--objective", "title-ranking", "--json",
                env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            beside = await live_latencies(client, 100, 3)
            stdout, stderr = await asyncio.wait_for(backfill_run.communicate(), 120)
            assert backfill_run.returncode == 0, stderr.decode()[-3000:]
    finally:
        pipeline.stdin.close()
        await asyncio.wait_for(pipeline.wait(), 60)
    summary = orjson.loads(stdout)
    figures = {name: {f"p{q}": round(float(np.percentile(values, q)), 1) for q in (50, 99)}
               for name, values in (("alone", alone), ("beside_backfill", beside))}
    figures["backfill"] = {"published": summary["published"], "seconds": summary["seconds"]}
    record_property("live_latency_ms", figures)
    print("\nlive latency ms:", figures)
    assert summary["unanswered"] == 0 and len(beside) == 300
