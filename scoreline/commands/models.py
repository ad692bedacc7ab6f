"""``scoreline models new / validate / list / describe``: make, check and inspect model packages."""

from __future__ import annotations

import argparse
from pathlib import Path

from scoreline import settings
from scoreline.commands.lineage import add_source_arguments, load_lineage
from scoreline.model_check import check_package
from scoreline.output import emit_json
from workflows import InMemoryFactStore, ModelRegistry, ModelUnavailable, package_sha256, validate_package
from workflows.skeleton import new_package


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="make, validate, list and describe model packages")
    actions = parser.add_subparsers(dest="models_command", required=True)

    new = actions.add_parser("new", help="write a package skeleton that validates and serves as generated")
    new.add_argument("model", metavar="NAME@VERSION")
    new.add_argument("--objective", required=True, help="the objective the model serves")
    new.add_argument("--dir", default=".", help="the models directory to write it in (default: here)")
    new.add_argument("--json", action="store_true", help="print one JSON object")
    new.set_defaults(func=run_new)

    validate = actions.add_parser("validate", help="load a package, score its example requests, time it")
    validate.add_argument("path", metavar="PATH", help="the package directory (<models dir>/NAME@VERSION)")
    validate.add_argument("--facts-dir", default=None,
                          help="fact files the workflow looks up (default: SCORELINE_FACTS_DIR, else the shipped "
                               "example facts)")
    validate.add_argument("--batch", type=int, default=100, help="items per timed batch (default 100)")
    validate.add_argument("--json", action="store_true", help="print one JSON object")
    validate.set_defaults(func=run_validate)

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


def run_new(args: argparse.Namespace) -> int:
    try:
        directory = new_package(args.dir, args.model, args.objective)
    except ValueError as exc:
        raise settings.ConfigError(str(exc)) from exc
    if args.json:
        emit_json({"id": args.model, "path": str(directory), "files": sorted(p.name for p in directory.iterdir())})
        return 0
    print(f"wrote {directory}/ (manifest.json, workflow.py, examples.json)")
    print(f"  check it:  scoreline models validate {directory}")
    print(f"  serve it:  scoreline run --models-dir {directory.parent} --rules <rules naming {args.model}>")
    return 0


def run_validate(args: argparse.Namespace) -> int:
    report = check_package(Path(args.path), settings.facts_dir(args), batch=args.batch)
    if args.json:
        emit_json(report)
    else:
        print(report["summary"])
        for line in report["notes"]:
            print(f"  {line}")
    return 0 if report["valid"] else 1


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
    package["sha256"] = package_sha256(registry.models_dir / manifest.id)
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
    print(f"  sha256     {package['sha256']}")
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
