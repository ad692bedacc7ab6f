"""``scoreline models list / describe``: the model packages, where they run and who uses them."""

from __future__ import annotations

import argparse

from scoreline import settings
from scoreline.commands.lineage import add_source_arguments, load_lineage
from scoreline.output import emit_json
from workflows import InMemoryFactStore, ModelRegistry, ModelUnavailable, validate_package


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list and describe the model packages")
    actions = parser.add_subparsers(dest="models_command", required=True)

    listing = actions.add_parser("list", help="every package: objective, shard, offline metrics")
    add_source_arguments(listing)
    listing.add_argument("--json", action="store_true", help="print one JSON list")
    listing.set_defaults(func=run_list)

    describe = actions.add_parser("describe", help="one package: manifest, facts, shard, who routes to it")
    add_source_arguments(describe)
    describe.add_argument("model", metavar="NAME@VERSION")
    describe.add_argument("--json", action="store_true", help="print one JSON object")
    describe.set_defaults(func=run_describe)


def _registry(args: argparse.Namespace) -> ModelRegistry:
    # Manifests only: listing and describing never need facts or weights in memory.
    return ModelRegistry(settings.models_dir(args), InMemoryFactStore())


def run_list(args: argparse.Namespace) -> int:
    registry = _registry(args)
    rules = settings.load_example_rules(args)
    rows = [{"name": m["name"], "version": m["version"], "objective": m["objective"],
             "shard": rules.models.get(f"{m['name']}@{m['version']}"), "metrics": m["metrics"],
             "baseline_metrics": m["baseline_metrics"]} for m in registry.list_models()]
    if args.json:
        emit_json(rows)
        return 0
    print(f"{'model':<20} {'objective':<14} {'shard':<6} metrics (baseline)")
    for row in rows:
        metrics = ", ".join(f"{k} {v:.3f} ({row['baseline_metrics'].get(k, float('nan')):.3f})"
                            for k, v in row["metrics"].items())
        print(f"{row['name'] + '@' + row['version']:<20} {row['objective']:<14} {row['shard'] or '-':<6} {metrics}")
    for model_id, why in registry.problems().items():
        print(f"! {model_id}: {why}")
    return 0


def run_describe(args: argparse.Namespace) -> int:
    registry = _registry(args)
    manifest = registry.manifest(args.model)  # ModelUnavailable (model_unavailable) names the model
    lineage = load_lineage(args, registry)
    node = lineage.models[manifest.id]
    try:
        validate_package(registry.models_dir / manifest.id)
        package = {"path": str(registry.models_dir / manifest.id), "valid": True, "problem": None}
    except ModelUnavailable as exc:
        package = {"path": str(registry.models_dir / manifest.id), "valid": False, "problem": str(exc)}
    doc = {"id": manifest.id, "name": manifest.name, "version": manifest.version, "objective": manifest.objective,
           "workflow": manifest.workflow, "shard": node["shard"], "metrics": dict(manifest.metrics),
           "baseline": manifest.baseline, "baseline_metrics": dict(manifest.baseline_metrics),
           "facts": {f: lineage.facts[f] for f in manifest.facts}, "used_by": node["uses"],
           "package": package, "manifest": manifest.to_dict()}
    if args.json:
        emit_json(doc)
        return 0
    print(f"{manifest.id}  ({manifest.objective}, workflow {manifest.workflow}, shard {node['shard'] or '-'})")
    print(f"  {manifest.description}")
    state = "valid" if package["valid"] else f"BROKEN: {package['problem']}"
    print(f"  package    {package['path']} ({state})")
    print(f"  trained    {manifest.training.get('date')} by {manifest.training.get('script', '?')}, "
          f"seed {manifest.training.get('seed')}, data {manifest.training.get('data_sizes')}")
    print("  metrics    " + ", ".join(f"{k} {v:.3f} (baseline {manifest.baseline_metrics[k]:.3f})"
                                       for k, v in manifest.metrics.items()))
    print(f"  baseline   {manifest.baseline}")
    print("  facts")
    for name, fact in doc["facts"].items():
        scope = "co-partitioned" if fact["scope"] == "shard" else "global"
        print(f"    {name:<20} key {fact['key'] or '?'}, {scope}; topic {fact['topic']}; "
              f"file {fact['file'] or '-'}")
    print("  used by" + ("" if node["uses"] else "    nothing: no objective routes to it"))
    for use in node["uses"]:
        print(f"    {use['objective']}: {use['role']}  ({use['path']})")
    return 0
