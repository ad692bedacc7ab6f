"""Where a request's milliseconds go in scoreline: client to router, router to worker, worker to client.

    .venv/bin/python scripts/latency_breakdown.py [--bootstrap B] [--rate 500] [--seconds 6] [--json]

Starts the bench's scoreline pipeline (router and workers as two processes, as ``scoreline bench``
runs it), sends requests at ``--rate`` per second (``--rate 0``: one at a time, each when the one
before is answered) and splits each request's time by the timestamps scoreline already records:

- **client -> router**: from the request record's timestamp (set by the client's producer) to the
  router's decision (``scoreline-routed-at``): the request hop and the router's queue;
- **router -> worker**: from the decision to the worker writing the result (``timings_ms.total``
  less ``routed``): the router's send and acknowledgement, the work hop, the worker's queue and
  the scoring (``timings_ms.scored`` of it);
- **worker -> client**: from the result being written to its arrival here: the worker's send and
  acknowledgement and the reply hop.

The stamps are whole milliseconds (Kafka's record timestamps): read the segments' p50 to about
a millisecond, and the end-to-end figure (measured here in microseconds) exactly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import orjson  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402

from streams.bench.layout import PARTITIONS  # noqa: E402
from streams.bench.mix import RequestMix  # noqa: E402
from streams.bench.runner import BenchPlan, _start, _stop_pipeline  # noqa: E402

SEGMENTS = ("end_to_end", "client_to_router", "router_to_worker", "scored", "worker_to_client")


async def measure(bootstrap: str, rate: float, seconds: float, sequential: int) -> dict:
    run = uuid.uuid4().hex[:8]
    pipeline = await _start("scoreline", bootstrap, run, BenchPlan())
    mix = RequestMix(run, pipeline.reply_topic, PARTITIONS)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, fetch_max_wait_ms=5)
    await producer.start()
    await consumer.start()
    sent: dict[bytes, float] = {}
    rows: list[tuple[float, float, float, float, float]] = []
    answered = asyncio.Event()

    async def read() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            now_ms = time.time() * 1000
            for records in batch.values():
                for record in records:
                    began = sent.pop(record.key, None)
                    if began is None:
                        continue
                    timings = orjson.loads(record.value).get("timings_ms") or {}
                    if "routed" in timings:
                        rows.append((now_ms - began, timings["routed"], timings["total"], timings["scored"],
                                     now_ms))
                    answered.set()

    async def send(n: int) -> None:
        rid, template, value, headers = mix.record(n)
        sent[rid] = time.time() * 1000
        await producer.send(pipeline.requests_topic, value, key=template.key, partition=template.partition,
                            headers=headers)

    try:
        tps = [TopicPartition(pipeline.reply_topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        reader = asyncio.create_task(read())
        n = 0
        deadline = time.monotonic() + 120
        while len(rows) < 20:  # warm up: the pipeline is up and has its partitions
            if time.monotonic() > deadline:
                raise TimeoutError("the pipeline did not answer within 120 s")
            await send(n)
            n += 1
            await asyncio.sleep(0.02)
        await asyncio.sleep(1.0)
        sent.clear()
        rows.clear()
        if rate <= 0:
            for _ in range(sequential):
                answered.clear()
                await send(n)
                n += 1
                await asyncio.wait_for(answered.wait(), 10)
        else:
            began, count = time.perf_counter(), 0
            while time.perf_counter() - began < seconds:
                for _ in range(int(rate * (time.perf_counter() - began)) - count):
                    await send(n)
                    n += 1
                    count += 1
                await asyncio.sleep(0.002)
            await asyncio.sleep(2.0)
        reader.cancel()
    finally:
        await consumer.stop()
        await producer.stop()
        await _stop_pipeline(pipeline, 20)
    a = np.array(rows, dtype=float)
    segments = {"end_to_end": a[:, 0], "client_to_router": a[:, 1], "router_to_worker": a[:, 2] - a[:, 1],
                "scored": a[:, 3], "worker_to_client": a[:, 0] - a[:, 2]}
    return {"rate_rps": rate, "samples": len(rows), "unanswered": len(sent),
            "ms": {name: {p: round(float(np.percentile(v, q)), 2) for p, q in (("p50", 50), ("p95", 95), ("p99", 99))}
                   for name, v in segments.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--rate", type=float, default=500.0, help="requests/s; 0: one at a time (default 500)")
    parser.add_argument("--seconds", type=float, default=6.0, help="how long to send at --rate (default 6)")
    parser.add_argument("--requests", type=int, default=300, help="with --rate 0: how many, one at a time")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    report = asyncio.run(measure(args.bootstrap, args.rate, args.seconds, args.requests))
    if args.json:
        print(json.dumps(report))
        return 0
    load = "one at a time" if args.rate <= 0 else f"{args.rate:g} requests/s"
    print(f"scoreline at {load}: {report['samples']} requests ({report['unanswered']} unanswered)")
    for name in SEGMENTS:
        f = report["ms"][name]
        print(f"  {name:<18} p50 {f['p50']:7.2f}   p95 {f['p95']:7.2f}   p99 {f['p99']:7.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
