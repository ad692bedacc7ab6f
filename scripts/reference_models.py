"""What the reference models cost, alone and served: the model's own speed beside scoreline's, per model.

    .venv/bin/python scripts/reference_models.py [--model ranker-gbdt ...] [--requests 600] [--json]

For each reference model (``scoreline models reference`` builds them; this does too, once):

* **alone**: the model's ceiling (``streams.bench.model_ceiling``): the package's workflow in a
  plain loop, decoded requests in hand, at batch sizes 1, 8, 32 and 128 on one thread; then on
  as many threads as scoreline's scoring pool has, each its own loop (requests a second).
* **served**: ``scoreline run``'s router and worker in this process on the local broker (the
  scoring executor and the model's batcher as its manifest sets them), driven through
  ``ScoreClient``: one request in flight (unloaded latency), then ``--concurrency`` in flight
  (sustained throughput), and the ratio of that throughput to the ceiling.

The model-bound bench (``scoreline bench``) is the measure of record; this is the quick look a
change to the scoring path needs, and what docs/workflows.md's table of the reference models
came from. Progress goes to standard error; ``--json`` prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from routing import parse_rules  # noqa: E402
from scoreline import settings  # noqa: E402
from streams.bench.model_ceiling import model_ceiling  # noqa: E402
from streams.client.score_client import ScoreClient  # noqa: E402
from streams.scoring import default_threads  # noqa: E402
from streams.services.pipeline import Pipeline, PipelineOptions  # noqa: E402
from streams.topics import TopicLayout  # noqa: E402
from streams.transport.admin import ensure_topics  # noqa: E402
from workflows import InMemoryFactStore, ModelRegistry  # noqa: E402
from workflows.training.reference import OBJECTIVES, reference_items, reference_rules  # noqa: E402


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def served(kafka, models: Path, objective: str, requests: int, concurrency: int) -> dict:
    """Unloaded latency and sustained throughput through router -> worker -> reply, by ``ScoreClient``."""
    prefix = f"refbench{int(time.time())}."
    layout = TopicLayout(prefix=prefix, request_partitions=4, shard_partitions=4, reply_partitions=4)
    doc = reference_rules(prefix)
    doc["objectives"] = {objective: doc["objectives"][objective]}
    doc["models"] = {f"{objective}@v1": doc["models"][f"{objective}@v1"]}
    rules = parse_rules(doc)
    registry = ModelRegistry(models, InMemoryFactStore())
    items = reference_items(objective, requests + 50, seed=6)
    await ensure_topics(kafka.bootstrap, layout.specs(rules.shards))
    try:
        async with Pipeline(kafka, layout, rules, registry, PipelineOptions(roles=("router", "worker"),
                                                                            follow_rules=False)) as pipeline:
            await pipeline.wait_ready()
            async with ScoreClient(kafka, "demo", layout=layout) as client:
                for item in items[:20]:  # warm: the model loaded, the connections up
                    await client.score(objective, item.context, item.payload, timeout=60)
                latencies = []
                for item in items[20:70]:
                    began = time.perf_counter()
                    await client.score(objective, item.context, item.payload, timeout=60)
                    latencies.append((time.perf_counter() - began) * 1000)
                window = asyncio.Semaphore(concurrency)

                async def one(item) -> None:
                    async with window:
                        await client.score(objective, item.context, item.payload, timeout=120)
                began = time.perf_counter()
                await asyncio.gather(*(one(item) for item in items[50:50 + requests]))
                rate = requests / (time.perf_counter() - began)
    finally:
        admin = kafka.admin()
        await admin.start()
        try:
            await admin.delete_topics([t for t in await admin.list_topics() if t.startswith(prefix)])
        finally:
            await admin.close()
    latencies.sort()
    return {"unloaded_p50_ms": round(latencies[len(latencies) // 2], 2),
            "unloaded_p99_ms": round(latencies[int(len(latencies) * 0.99)], 2),
            "sustained_rps": round(rate, 1), "concurrency": concurrency}


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", choices=OBJECTIVES, help="one model (repeatable); default all")
    parser.add_argument("--requests", type=int, default=600, help="requests for the sustained run (default 600)")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight when sustained (default 64)")
    parser.add_argument("--bootstrap", default=None, help="Kafka (default: the local broker, started on demand)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    reference = settings.reference_models()
    kafka = settings.kafka_settings(argparse.Namespace(bootstrap=args.bootstrap))
    threads = default_threads()
    report = {}
    for objective in args.model or OBJECTIVES:
        directory = reference / "models" / f"{objective}@v1"
        say(f"{objective}: alone ...")
        figures = {"alone": model_ceiling(directory, objective, threads)}
        say(f"{objective}: served ...")
        figures["served"] = await served(kafka, reference / "models", objective, args.requests, args.concurrency)
        figures["served_vs_ceiling"] = round(figures["served"]["sustained_rps"] / figures["alone"]["ceiling_rps"], 3)
        report[objective] = figures
        say(f"{objective}: {json.dumps(figures)}")
    if args.json:
        print(json.dumps(report))
    else:
        print("| model | us/request at batch 1 / 8 / 32 / 128 | ceiling req/s | served req/s | ratio | "
              "unloaded p50 / p99 ms |")
        print("|---|---|---:|---:|---:|---|")
        for objective, f in report.items():
            per = " / ".join(f"{v:g}" for v in f["alone"]["per_request_us"].values())
            print(f"| {objective} | {per} | {f['alone']['ceiling_rps']:g} | {f['served']['sustained_rps']:g} | "
                  f"{f['served_vs_ceiling']:.2f} | {f['served']['unloaded_p50_ms']} / "
                  f"{f['served']['unloaded_p99_ms']} |")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
