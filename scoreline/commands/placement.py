"""``scoreline placement plan [--shards N] [--apply]``: put the rules' models on shards by memory and traffic."""

from __future__ import annotations

import argparse
import asyncio
import os
import urllib.request
from collections import defaultdict
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from routing import Rules, rules_to_doc
from routing.placement import Placement, plan_capacity, plan_placement
from scoreline import settings
from scoreline.output import emit_json
from streams.repository import ModelRepository
from streams.rules.log import read_log
from streams.rules.publisher import RulesPublisher
from workflows import InMemoryFactStore, ModelRegistry, ModelUnavailable
from workflows.memory import declared_bytes, onnx_bytes


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("placement", help="assign the rules' models to shards by memory and traffic")
    actions = parser.add_subparsers(dest="placement_command", required=True)
    plan = actions.add_parser("plan", help="print the plan as a rules diff; --apply publishes it as a new version")
    settings.add_connection_arguments(plan)
    settings.add_config_arguments(plan, facts=False, serving=False)
    plan.add_argument("--shards", type=int, default=None,
                      help="how many shards to spread the models over (default: the rules' shards; more adds "
                           "shards s<N>, whose workers you start)")
    plan.add_argument("--metrics-url", action="append", default=[],
                      help="a running pipeline's /metrics (repeatable): measured model sizes and recent traffic "
                           "per model replace the declared sizes and the rules' allocation")
    plan.add_argument("--tolerance", type=float, default=0.1,
                      help="keep a model where it is unless moving it gains more than this share of a fair "
                           "shard (default 0.1): every move costs a cold load")
    plan.add_argument("--forecast", type=float, default=None, metavar="RPS",
                      help="peak requests/s to plan for: also print the replicas and partitions each role needs "
                           "(and KEDA's lagThreshold), split over the shards as the plan places the traffic")
    plan.add_argument("--router-rps", type=float, default=3000.0, metavar="RPS",
                      help="requests/s one router replica sustains, measured (default 3000: `scoreline bench` on "
                           "2 cores)")
    plan.add_argument("--worker-rps", type=float, default=800.0, metavar="RPS",
                      help="requests/s one worker replica sustains, measured with your models (`scoreline bench "
                           "--model`; default 800)")
    plan.add_argument("--utilisation", type=float, default=0.7,
                      help="the share of what a replica sustains to plan it at (default 0.7)")
    plan.add_argument("--burst", type=float, default=2.0,
                      help="partitions per planned replica: how far the autoscaler may scale past the forecast "
                           "(default 2)")
    plan.add_argument("--apply", action="store_true", help="publish the plan as a new rules version")
    plan.add_argument("--by", default=os.environ.get("USER", "unknown"), help="who publishes (default $USER)")
    plan.add_argument("--json", action="store_true", help="print one JSON object")
    plan.set_defaults(func=run_plan)


def run_plan(args: argparse.Namespace) -> int:
    doc, rules, source = asyncio.run(_rules_in_force(args))
    measured, traffic = _scrape(args.metrics_url)
    memory, sizes_from = _memory(args, rules, measured)
    shards = _shard_names(rules, args.shards)
    plan = plan_placement(rules, memory, traffic=traffic or None, shards=shards, tolerance=args.tolerance)
    report: dict[str, Any] = {
        "rules_version": rules.version, "rules_from": source, "shards": list(plan.shards),
        "traffic_from": "metrics" if traffic else "rules allocation",
        "moves": {m: {"from": a, "to": b} for m, (a, b) in plan.moves.items()},
        "memory_bytes": {m: {"bytes": memory[m], "from": sizes_from[m]} for m in memory},
        "before": {s: vars(load) for s, load in plan.before.items()},
        "after": {s: vars(load) for s, load in plan.after.items()},
        "imbalance": {"before": round(plan.imbalance("before"), 3), "after": round(plan.imbalance("after"), 3)},
        "new_shards": [s for s in plan.shards if s not in rules.shards], "applied": None,
    }
    if args.forecast is not None:
        shares = {s: load.traffic for s, load in plan.after.items()}
        capacity = plan_capacity(shares, args.forecast, router_rps=args.router_rps, worker_rps=args.worker_rps,
                                 utilisation=args.utilisation, burst=args.burst)
        report["capacity"] = {"forecast_rps": capacity.forecast_rps, "router": vars(capacity.router),
                              "shards": {s: vars(c) for s, c in capacity.shards.items()}}
    if args.apply and plan.moves:
        publisher = RulesPublisher(settings.kafka_settings(args), settings.layout(args), published_by=args.by)
        published = asyncio.run(publisher.publish_version(_applied(doc, plan)))
        report["applied"] = {"version": published.record.version, "topic": publisher.topic}
    if args.json:
        emit_json(report)
        return 0
    _print(report, plan, args.apply)
    return 0


async def _rules_in_force(args: argparse.Namespace) -> tuple[dict[str, Any], Rules, str]:
    """The newest published rules version (its document), else the rules file the flags name."""
    log = await read_log(settings.kafka_settings(args), settings.layout(args).rules, timeout=30.0)
    if log.latest is not None:
        return dict(log.latest.doc), log.latest.rules(), f"{log.topic} version {log.latest.version}"
    rules = settings.load_example_rules(args)
    return rules_to_doc(rules), rules, "rules file (nothing published yet)"


def _scrape(urls: list[str]) -> tuple[dict[str, int], dict[str, float]]:
    """Measured bytes and results per model from running pipelines' metrics (summed over every URL)."""
    measured: dict[str, int] = {}
    traffic: defaultdict[str, float] = defaultdict(float)
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - an operator's URL
                text = response.read().decode()
        except OSError as exc:
            raise settings.ConfigError(f"--metrics-url {url}: {exc}") from exc
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                model = sample.labels.get("model")
                if not model:
                    continue
                if sample.name == "scoreline_model_measured_bytes":
                    measured[model] = max(measured.get(model, 0), int(sample.value))
                elif sample.name == "scoreline_results_total" and sample.labels.get("role") == "worker":
                    traffic[model] += sample.value
    return measured, dict(traffic)


def _memory(args: argparse.Namespace, rules: Rules, measured: dict[str, int]) -> tuple[dict[str, int], dict[str, str]]:
    """Bytes per model of the rules: measured by a worker, else declared by the local or the published package."""
    registry = ModelRegistry(settings.models_dir(args), InMemoryFactStore())
    heads: dict[str, Any] | None = None  # the repository's, read on the first model no local directory has
    memory: dict[str, int] = {}
    origin: dict[str, str] = {}
    for model in rules.models:
        if model in measured:
            memory[model], origin[model] = measured[model], "measured"
            continue
        try:
            manifest = registry.manifest(model)
        except ModelUnavailable:
            if heads is None:
                heads = asyncio.run(_heads(args))
            head = heads.get(model)
            if head is None:
                continue
            # The ONNX file's own size is not in the head: the archive's bounds it.
            memory[model] = declared_bytes(head.manifest.get("weights", {}),
                                           head.size if head.manifest.get("onnx") else 0)
            origin[model] = "declared (published package)"
            continue
        memory[model] = declared_bytes(manifest.to_dict()["weights"], onnx_bytes(registry.directory(model), manifest))
        origin[model] = "declared (local package)"
    return memory, origin


async def _heads(args: argparse.Namespace) -> dict[str, Any]:
    repository = ModelRepository(settings.kafka_settings(args), settings.layout(args),
                                 cache_dir=settings.model_cache_dir())
    await repository.refresh()
    return dict(repository.heads())


def _shard_names(rules: Rules, count: int | None) -> list[str]:
    if count is None:
        return list(rules.shards)
    if count < 1:
        raise settings.ConfigError("--shards must be at least 1")
    names = list(rules.shards[:count])
    n = 1
    while len(names) < count:
        if f"s{n}" not in names and f"s{n}" not in rules.shards:
            names.append(f"s{n}")
        n += 1
    return names


def _applied(doc: dict[str, Any], plan: Placement) -> dict[str, Any]:
    """The rules document with the plan's shards and placement."""
    out = dict(doc)
    out.pop("version", None)
    shards = dict(out.get("shards") or {})
    for shard in plan.shards:
        shards.setdefault(shard, {})
    out["shards"] = shards
    models = {m: dict(spec) for m, spec in (out.get("models") or {}).items()}
    for model, (_, to) in plan.moves.items():
        models.setdefault(model, {})["shard"] = to
    out["models"] = models
    return out


def _print(report: dict[str, Any], plan: Placement, apply: bool) -> None:
    print(f"placement of rules version {report['rules_version']} ({report['rules_from']}), traffic from "
          f"{report['traffic_from']}:")
    print(f"  {'shard':<8} {'models':>6} {'memory MiB':>11} {'traffic':>8}   ->  {'models':>6} {'memory MiB':>11} "
          f"{'traffic':>8}")
    for shard in plan.shards:
        b, a = plan.before[shard], plan.after[shard]
        print(f"  {shard:<8} {b.models:>6} {b.memory / 2**20:>11.1f} {b.traffic:>8.1%}   ->  {a.models:>6} "
              f"{a.memory / 2**20:>11.1f} {a.traffic:>8.1%}")
    print(f"  imbalance (busiest shard over a fair share): {report['imbalance']['before']} -> "
          f"{report['imbalance']['after']}")
    if report.get("capacity"):
        _print_capacity(report["capacity"])
    if not plan.moves:
        print("no model moves: the placement is balanced within the tolerance")
        return
    print("rules diff (models):")
    for model, (was, now) in sorted(plan.moves.items()):
        print(f'-   "{model}": {{"shard": "{was}"}}')
        print(f'+   "{model}": {{"shard": "{now}"}}')
    for shard in report["new_shards"]:
        print(f"new shard {shard}: start its workers (scoreline run --role worker --shard {shard})")
    if report["applied"]:
        print(f"published as rules version {report['applied']['version']} on {report['applied']['topic']}")
    elif not apply:
        print("not applied: --apply publishes it as a new rules version")


def _print_capacity(capacity: dict[str, Any]) -> None:
    print(f"for {capacity['forecast_rps']:g} requests/s at peak (Helm values: roles.*.replicas, "
          "kafka.partitions.*, autoscaling.*.perReplicaRps):")
    print(f"  {'role':<12} {'req/s':>9} {'replicas':>9} {'partitions':>11} {'lagThreshold':>13}")
    rows = [("router", capacity["router"])] + [(f"worker {s}", c) for s, c in capacity["shards"].items()]
    for name, row in rows:
        print(f"  {name:<12} {row['rps']:>9g} {row['replicas']:>9} {row['partitions']:>11} {row['lag_threshold']:>13}")
    widest = max(row["partitions"] for _, row in rows[1:])
    print(f"  partitions are set when a topic is created: kafka.partitions.shard {widest} covers every shard")
