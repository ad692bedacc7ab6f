"""Hundreds of models per worker: throughput, latency, hit ratio and memory against the model budget.

    .venv/bin/python scripts/model_scale.py [--models 500] [--min-mb 1] [--max-mb 5] [--requests 20000]
                                            [--rate 1000] [--seconds 5] [--json]

One objective's experiment routes its users over ``--models`` model versions (packages of 1-5 MB
of weights each, generated once under ``SCORELINE_HOME/scale-models``), the cells weighted so that
traffic follows Zipf(1.1) over them. Three runs, each in a fresh process so that memory is its
own: the same traffic over **4** models; over all of them with a budget that **holds them all**;
and with a budget that holds **a fifth** of them. Each run routes and scores through a Router and
a Worker on the in-memory transport (``streams.transport.memory``): what is measured is the
worker's side, model loads and evictions included, without a broker's cost or noise (which is
the same for every run; ``scoreline bench`` measures that). Per run:

- throughput: ``--requests`` queued at once, after a warm-up of as many (requests/s, and CPU
  microseconds per request);
- latency: ``--rate`` requests/s for ``--seconds``, p50/p99 from request to reply record;
- hit ratio (requests that found their model loaded), loads and evictions per second;
- RSS: the peak against the budget plus the process's fixed overhead (its RSS with everything
  imported and the requests queued, before the first model loads) plus what the traffic adds
  beside models (the in-memory broker keeps every record: read from the 4-model run's growth).

The three runs go in ``--rounds`` interleaved rounds (a slow spell of the machine hits each run
of a round alike); the ratios are reported per round and as min/median/max.

It also times ``routing.route`` per request under the 4-model and the 500-model rules.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import orjson  # noqa: E402

from routing import parse_rules  # noqa: E402
from routing.route import RequestView, route  # noqa: E402
from streams.broker.config import scoreline_home  # noqa: E402
from streams.rules.holder import RulesHolder  # noqa: E402
from streams.services.router import Router  # noqa: E402
from streams.services.worker import Worker  # noqa: E402
from streams.topics import TopicLayout  # noqa: E402
from streams.transport.memory import MemoryBroker, MemoryTransport  # noqa: E402
from streams.transport.settings import KafkaSettings  # noqa: E402
from workflows import InMemoryFactStore, ModelRegistry  # noqa: E402
from workflows.skeleton import new_package  # noqa: E402

KAFKA = KafkaSettings(bootstrap="127.0.0.1:1", fetch_max_records=1000)
LAYOUT = TopicLayout(prefix="scale.", request_partitions=1, shard_partitions=1, reply_partitions=1)
REPLIES = LAYOUT.replies("demo")
ZIPF_S = 1.1
PAGE = os.sysconf("SC_PAGE_SIZE")


def generate(directory: Path, count: int, min_mb: float, max_mb: float) -> dict[str, int]:
    """``count`` packages ``scale@v0``..: the skeleton workflow plus one weight array of 1-5 MB; their sizes."""
    sizes_file = directory / "sizes.json"
    if sizes_file.exists():
        return json.loads(sizes_file.read_text())
    rng = random.Random(11)
    sizes = {}
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        model_id = f"scale@v{i}"
        package = new_package(directory, model_id, "scale") if not (directory / model_id).exists() \
            else directory / model_id
        n = int(rng.uniform(min_mb, max_mb) * 2**20) // 4
        manifest = json.loads((package / "manifest.json").read_text())
        manifest["weights"] = {"w": {"shape": [n], "dtype": "float32"}}
        (package / "manifest.json").write_text(json.dumps(manifest, indent=2))
        np.savez(package / "weights.npz", w=np.full(n, 1.0 + i / count, dtype=np.float32))
        sizes[model_id] = n * 4
        print(f"\rgenerated {i + 1}/{count} packages", end="", file=sys.stderr)
    print(file=sys.stderr)
    sizes_file.write_text(json.dumps(sizes))
    return sizes


def rules_over(models: list[str]):
    """One objective; an experiment over all its users with one cell per model, Zipf(1.1) by rank."""
    cells = {str(k): {"model": m, "weight": max(1, round(100_000 / (k + 1) ** ZIPF_S))} for k, m in enumerate(models)}
    return parse_rules({
        "version": 1, "shards": {"s1": {}}, "models": {m: {"shard": "s1"} for m in models},
        "clients": {"demo": {"objectives": ["*"], "reply_topics": [REPLIES]}},
        "objectives": {"scale": {"shard_key": "context.user_id", "default": models[0],
                                 "experiments": [{"id": "zipf", "salt": "zipf", "allocation_percent": 100,
                                                  "cells": cells}]}}})


def requests(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [orjson.dumps({"request_id": f"r-{seed}-{i}", "objective": "scale", "client": "demo",
                          "reply_to": REPLIES, "context": {"user_id": f"u-{rng.randrange(10**7)}"},
                          "payload": {"x": rng.uniform(-2, 2)}}) for i in range(n)]


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


async def phase(args: argparse.Namespace) -> dict:
    """One run, in this process: warm-up, throughput, paced latency."""
    models = [f"scale@v{i}" for i in range(args.phase_models)]
    rules = rules_over(models)
    registry = ModelRegistry(Path(args.dir), InMemoryFactStore(), memory_budget=args.budget)
    broker = MemoryBroker()
    transport = MemoryTransport(broker)
    warm, timed = requests(args.requests, 1), requests(args.requests, 2)
    paced = requests(int(args.rate * args.seconds), 3)
    overhead = rss()
    router = Router(KAFKA, LAYOUT, RulesHolder(rules), group_id="router", transport=transport)
    worker = Worker(KAFKA, LAYOUT, registry, shard="s1", group_id="worker.s1", transport=transport)
    peak = overhead

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, rss())
            await asyncio.sleep(0.02)

    async def answered(n: int, timeout: float = 600.0) -> None:
        deadline = time.monotonic() + timeout
        while len(broker.records(REPLIES)) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(broker.records(REPLIES))} of {n} replies")
            await asyncio.sleep(0.002)

    sampler = asyncio.create_task(sample())
    await router.start()
    await worker.start()
    try:
        for value in warm:
            broker.produce(LAYOUT.requests, value)
        await answered(len(warm))
        before = _counts(registry, worker)
        began, cpu = time.perf_counter(), time.process_time()
        for value in timed:
            broker.produce(LAYOUT.requests, value)
        await answered(len(warm) + len(timed))
        elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
        after = _counts(registry, worker)
        first = len(broker.records(REPLIES))
        step, began_paced = max(1, int(args.rate / 100)), time.perf_counter()
        for i in range(0, len(paced), step):
            for value in paced[i:i + step]:
                broker.produce(LAYOUT.requests, value)
            await asyncio.sleep(max(0.0, began_paced + (i + step) / args.rate - time.perf_counter()))
        await answered(first + len(paced))
    finally:
        await worker.stop()
        await router.stop()
        sampler.cancel()
    sent = {r.value and orjson.loads(r.value)["request_id"]: r.timestamp for r in broker.records(LAYOUT.requests)}
    replies = broker.records(REPLIES)
    bodies = [orjson.loads(r.value) for r in replies]
    latencies = sorted(r.timestamp - sent[b["request_id"]] for r, b in zip(replies[first:], bodies[first:]))
    statuses = {b["status"] for b in bodies}
    delta = {k: after[k] - before[k] for k in after}
    return {
        "models": len(models), "budget_bytes": args.budget, "requests": len(timed),
        "statuses": sorted(statuses), "distinct_models_served": len({b["model"] for b in bodies}),
        "requests_per_s": round(len(timed) / elapsed, 1), "cpu_us_per_request": round(cpu / len(timed) * 1e6, 1),
        "hit_ratio": round(1 - delta["waits"] / len(timed), 4),
        "loads_per_s": round(delta["loads"] / elapsed, 2), "evictions_per_s": round(delta["evictions"] / elapsed, 2),
        "latency_ms": {"rate": args.rate, "p50": _pct(latencies, 50), "p99": _pct(latencies, 99)},
        "models_loaded_at_end": len(registry.loaded()), "model_bytes_held": registry.bytes_held(),
        "rss_bytes": {"fixed_overhead": overhead, "peak": peak, "peak_over_overhead": peak - overhead,
                      "max_rss_kernel": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024},
    }


def _counts(registry: ModelRegistry, worker: Worker) -> dict[str, int]:
    return {"loads": registry.counts["loads"], "evictions": registry.counts["evictions"], "waits": worker.load_waits}


def _pct(values: list[int], q: float) -> float | None:
    return float(values[min(len(values) - 1, int(len(values) * q / 100))]) if values else None


def route_cost(models: list[str], n: int = 20_000) -> float:
    """CPU microseconds per ``route()`` call under rules over ``models``."""
    rules = rules_over(models)
    rng = random.Random(5)
    views = [RequestView(f"r-{i}", "scale", "demo", REPLIES, f"u-{rng.randrange(10**7)}") for i in range(n)]
    best = float("inf")
    for _ in range(5):
        began = time.process_time()
        for view in views:
            route(view, rules)
        best = min(best, time.process_time() - began)
    return round(best / n * 1e6, 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--models", type=int, default=500)
    parser.add_argument("--min-mb", type=float, default=1.0)
    parser.add_argument("--max-mb", type=float, default=5.0)
    parser.add_argument("--requests", type=int, default=20_000, help="per throughput run (and its warm-up)")
    parser.add_argument("--rate", type=float, default=1000.0, help="requests/s of the latency run")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the latency run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the three runs (default 3)")
    parser.add_argument("--dir", default=None, help="where the packages are generated (default under SCORELINE_HOME)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--phase-models", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase_models:
        print(json.dumps(asyncio.run(phase(args))))
        return 0
    directory = Path(args.dir or scoreline_home() / "scale-models" / f"{args.models}x{args.min_mb:g}-{args.max_mb:g}MB")
    sizes = generate(directory, args.models, args.min_mb, args.max_mb)
    models = [f"scale@v{i}" for i in range(args.models)]
    total = sum(sizes.values())
    # Budgets: every model with 10% to spare; the most popular fifth (by size, not by rank: what fits).
    runs = {"4_models": (4, total), "all_within_budget": (args.models, int(total * 1.1)),
            "fifth_within_budget": (args.models, total // 5)}
    report: dict = {"models": args.models, "package_bytes_total": total, "zipf_s": ZIPF_S, "rounds": args.rounds,
                    "transport": "in-memory (streams.transport.memory)", "per_round": []}
    # Interleaved rounds: a slow spell of the machine hits every run of a round alike.
    for round_no in range(args.rounds):
        results = {}
        for name, (count, budget) in runs.items():
            print(f"round {round_no + 1}/{args.rounds}, {name}: {count} models, budget {budget / 2**20:.0f} MiB",
                  file=sys.stderr)
            out = subprocess.run([sys.executable, __file__, "--phase-models", str(count), "--budget", str(budget),
                                  "--dir", str(directory), "--requests", str(args.requests), "--rate",
                                  str(args.rate), "--seconds", str(args.seconds)],
                                 capture_output=True, text=True, check=False)
            if out.returncode != 0:
                sys.stderr.write(out.stderr[-4000:])
                return 1
            results[name] = json.loads(out.stdout.strip().splitlines()[-1])
        base = results["4_models"]
        # What the traffic adds beside models (the in-memory broker keeps every record), from the 4-model run.
        traffic_bytes = base["rss_bytes"]["peak_over_overhead"] - base["model_bytes_held"]
        for r in results.values():
            r["vs_4_models"] = round(r["requests_per_s"] / base["requests_per_s"], 3)
            allowed = r["budget_bytes"] + r["rss_bytes"]["fixed_overhead"] + traffic_bytes
            r["rss_bytes"]["traffic"] = traffic_bytes
            r["rss_bytes"]["over_budget_and_overhead"] = max(0, r["rss_bytes"]["peak"] - allowed)
        report["per_round"].append(results)
    report["vs_4_models"] = {name: _spread([r[name]["vs_4_models"] for r in report["per_round"]]) for name in runs}
    report["runs"] = {name: _median_run([r[name] for r in report["per_round"]]) for name in runs}
    report["route_us_per_request"] = {"4_models": route_cost(models[:4]), f"{args.models}_models": route_cost(models)}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{'run (median round)':<22} {'req/s':>8} {'vs 4 (min-max)':>16} {'cpu µs':>7} {'hit':>6} {'loads/s':>8} "
          f"{'evict/s':>8} {'p50/p99 ms':>11} {'budget MiB':>10} {'peak RSS MiB':>12} {'over MiB':>8}")
    for name, r in report["runs"].items():
        spread = report["vs_4_models"][name]
        print(f"{name:<22} {r['requests_per_s']:>8.0f} {spread['median']:>6.2f} "
              f"({spread['min']:.2f}-{spread['max']:.2f}) {r['cpu_us_per_request']:>7.1f} {r['hit_ratio']:>6.3f} "
              f"{r['loads_per_s']:>8.1f} "
              f"{r['evictions_per_s']:>8.1f} {r['latency_ms']['p50']:>5.0f}/{r['latency_ms']['p99']:<5.0f} "
              f"{r['budget_bytes'] / 2**20:>10.0f} {r['rss_bytes']['peak'] / 2**20:>12.0f} "
              f"{r['rss_bytes']['over_budget_and_overhead'] / 2**20:>8.0f}")
    print(f"route() µs per request: {report['route_us_per_request']}")
    return 0


def _spread(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"min": ordered[0], "median": ordered[len(ordered) // 2], "max": ordered[-1]}


def _median_run(runs: list[dict]) -> dict:
    """The run whose throughput is the median of its rounds."""
    return sorted(runs, key=lambda r: r["requests_per_s"])[len(runs) // 2]


if __name__ == "__main__":
    sys.exit(main())
