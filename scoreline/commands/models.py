"""``scoreline models new / validate / reference / list / describe``: make, check and inspect model packages."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any

from routing import Rules
from scoreline import settings
from scoreline.commands.lineage import add_source_arguments, load_lineage
from scoreline.model_check import check_package
from scoreline.output import emit_json
from streams.repository import ModelRepository
from streams.rules.log import read_log
from workflows import InMemoryFactStore, ModelRegistry, ModelUnavailable, package_sha256, validate_package
from workflows.loading import build_model
from workflows.memory import declared_bytes, model_bytes, onnx_bytes
from workflows.packaging import Manifest
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

    reference = actions.add_parser("reference", help="build the reference models (a GBDT ranker, an MLP, an "
                                   "embedding table: realistic sizes, synthetic data) and their rules")
    reference.add_argument("--out", type=Path, default=None,
                           help="the directory to write models/ and rules.json in (default: under SCORELINE_HOME, "
                                "where `scoreline demo --models reference` finds them)")
    reference.add_argument("--json", action="store_true", help="print one JSON object")
    reference.set_defaults(func=run_reference)

    publish = actions.add_parser("publish", help="validate a package and publish it to the model repository topic")
    settings.add_connection_arguments(publish, rules=False)
    publish.add_argument("path", metavar="PATH", help="the package directory (<models dir>/NAME@VERSION)")
    publish.add_argument("--facts-dir", default=None, help="fact files its workflow looks up, for the validation")
    publish.add_argument("--by", default=os.environ.get("USER", "unknown"), help="who publishes (default $USER)")
    publish.add_argument("--json", action="store_true", help="print one JSON object")
    publish.set_defaults(func=run_publish)

    pull = actions.add_parser("pull", help="write a published package out, verified")
    settings.add_connection_arguments(pull, rules=False)
    pull.add_argument("model", metavar="NAME@VERSION")
    pull.add_argument("--dir", default=".", help="the directory to write NAME@VERSION/ in (default: here)")
    pull.add_argument("--json", action="store_true", help="print one JSON object")
    pull.set_defaults(func=run_pull)

    retire = actions.add_parser("retire", help="tombstone a published package (refused while the rules route to it)")
    settings.add_connection_arguments(retire)
    retire.add_argument("model", metavar="NAME@VERSION")
    retire.add_argument("--json", action="store_true", help="print one JSON object")
    retire.set_defaults(func=run_retire)

    listing = actions.add_parser("list", help="every package: objective, shard, offline metrics")
    add_source_arguments(listing)
    listing.add_argument("--published", action="store_true",
                         help="also the model repository topic's packages (needs Kafka: --bootstrap)")
    listing.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers, with --published")
    listing.add_argument("--json", action="store_true", help="print one JSON list")
    listing.set_defaults(func=run_list)

    describe = actions.add_parser("describe", help="one package: manifest, facts, shard, who routes to it, memory")
    add_source_arguments(describe)
    describe.add_argument("model", metavar="NAME@VERSION")
    describe.add_argument("--published", action="store_true",
                          help="a package no local models directory holds: describe the published one "
                               "(needs Kafka: --bootstrap)")
    describe.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers, with --published")
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


def run_reference(args: argparse.Namespace) -> int:
    out = settings.reference_models(args.out, rebuild=True)
    packages = sorted(p for p in (out / "models").iterdir() if p.is_dir())
    sizes = {p.name: sum(f.stat().st_size for f in p.iterdir()) for p in packages}
    if args.json:
        emit_json({"path": str(out), "rules": str(out / "rules.json"), "packages": sizes})
        return 0
    for name, size in sizes.items():
        print(f"{name:<26} {size / 2**20:6.1f} MiB")
    print(f"serve them:  scoreline run --models-dir {out / 'models'} --rules {out / 'rules.json'}")
    print("or see them end to end:  scoreline demo --models reference")
    return 0


def _repository(args: argparse.Namespace) -> ModelRepository:
    return ModelRepository(settings.kafka_settings(args), settings.layout(args), cache_dir=settings.model_cache_dir())


def run_publish(args: argparse.Namespace) -> int:
    report = check_package(Path(args.path), settings.facts_dir(args))
    if not report["valid"]:
        raise ModelUnavailable(f"not published: {report['summary']}")
    repository = _repository(args)
    published = asyncio.run(repository.publish(Path(args.path), by=args.by))
    doc = {"id": published.id, "sha256": published.sha256, "bytes": published.size, "chunks": published.chunks,
           "created": published.created, "topic": repository.topic}
    if args.json:
        emit_json(doc)
    elif published.created:
        print(f"published {published.id} to {repository.topic}: {published.size} bytes in {published.chunks} "
              f"chunks, sha256 {published.sha256}")
    else:
        print(f"{published.id} is already published with these bytes (sha256 {published.sha256[:12]}…): nothing to do")
    return 0


def run_pull(args: argparse.Namespace) -> int:
    repository = _repository(args)
    directory = asyncio.run(repository.pull(args.model, Path(args.dir)))
    sha256 = package_sha256(directory)
    if args.json:
        emit_json({"id": args.model, "path": str(directory), "sha256": sha256})
    else:
        print(f"pulled {args.model} into {directory} (sha256 {sha256}, verified)")
    return 0


def run_retire(args: argparse.Namespace) -> int:
    rules = asyncio.run(_rules_in_force(args))
    routed = {model: f"rules version {rules.version}, shard {shard}" for model, shard in rules.models.items()}
    head = asyncio.run(_repository(args).retire(args.model, routed=routed))
    if args.json:
        emit_json({"id": head.id, "sha256": head.sha256, "retired": True})
    else:
        print(f"retired {head.id} (sha256 {head.sha256[:12]}…): its records are tombstoned")
    return 0


async def _rules_in_force(args: argparse.Namespace) -> Rules:
    """The newest published rules version, else the rules file the flags name."""
    log = await read_log(settings.kafka_settings(args), settings.layout(args).rules, timeout=30.0)
    return log.latest.rules() if log.latest is not None else settings.load_example_rules(args)


def run_list(args: argparse.Namespace) -> int:
    registry = _registry(args)
    rules = settings.load_example_rules(args)
    rows = [{"name": m["name"], "version": m["version"], "objective": m["objective"],
             "shard": rules.models.get(f"{m['name']}@{m['version']}"), "metrics": m["metrics"],
             "baseline_metrics": m["baseline_metrics"], "source": "local"} for m in registry.list_models()]
    if args.published:
        repository = _repository(args)
        asyncio.run(repository.refresh())
        local = {f"{r['name']}@{r['version']}" for r in rows}
        for model_id, head in repository.heads().items():
            if model_id in local:
                continue
            manifest = head.manifest
            rows.append({"name": manifest["name"], "version": manifest["version"], "objective": manifest["objective"],
                         "shard": rules.models.get(model_id), "metrics": manifest["metrics"],
                         "baseline_metrics": manifest["baseline_metrics"], "source": repository.topic})
    if args.json:
        emit_json(rows)
        return 0
    print(f"{'model':<20} {'objective':<14} {'shard':<6} metrics (baseline)")
    for row in rows:
        metrics = ", ".join(f"{k} {v:.3f} ({row['baseline_metrics'].get(k, float('nan')):.3f})"
                            for k, v in row["metrics"].items())
        source = "" if row["source"] == "local" else f"  [published on {row['source']}]"
        print(f"{row['name'] + '@' + row['version']:<20} {row['objective']:<14} {row['shard'] or '-':<6} {metrics}"
              f"{source}")
    for model_id, why in registry.problems().items():
        print(f"! {model_id}: {why}")
    return 0


def run_describe(args: argparse.Namespace) -> int:
    registry = _registry(args)
    try:
        manifest = registry.manifest(args.model)  # ModelUnavailable (model_unavailable) names the model
    except ModelUnavailable:
        if not args.published:
            raise
        return _describe_published(args)
    lineage = load_lineage(args, registry)
    node = lineage.models[manifest.id]
    try:
        validate_package(registry.models_dir / manifest.id)
        package = {"path": str(registry.models_dir / manifest.id), "valid": True, "problem": None}
    except ModelUnavailable as exc:
        package = {"path": str(registry.models_dir / manifest.id), "valid": False, "problem": str(exc)}
    package["sha256"] = package_sha256(registry.models_dir / manifest.id)
    memory = _memory(registry.models_dir / manifest.id, manifest, settings.facts_dir(args))
    doc = {"id": manifest.id, "name": manifest.name, "version": manifest.version, "objective": manifest.objective,
           "workflow": manifest.workflow, "shard": node["shard"], "metrics": dict(manifest.metrics),
           "baseline": manifest.baseline, "baseline_metrics": dict(manifest.baseline_metrics),
           "facts": {f: lineage.facts[f] for f in manifest.facts}, "used_by": node["uses"],
           "package": package, "memory": memory, "source": "local", "manifest": manifest.to_dict()}
    if args.json:
        emit_json(doc)
        return 0
    print(f"{manifest.id}  ({manifest.objective}, workflow {manifest.workflow}, shard {node['shard'] or '-'})")
    print(f"  {manifest.description}")
    state = "valid" if package["valid"] else f"BROKEN: {package['problem']}"
    print(f"  package    {package['path']} ({state})")
    print(f"  sha256     {package['sha256']}")
    measured = f"{memory['measured']} bytes measured loaded" if memory["measured"] is not None else \
        f"not measured: {memory['problem']}"
    print(f"  memory     {memory['declared']} bytes declared (arrays and ONNX file), {measured}")
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


def _memory(directory: Path, manifest: Manifest, facts_dir: Path) -> dict[str, Any]:
    """What the package declares it holds, and what it holds once loaded (as the memory budget counts it)."""
    declared = declared_bytes(manifest.to_dict()["weights"], onnx_bytes(directory, manifest))
    memory: dict[str, Any] = {"declared": declared, "measured": None, "problem": None}
    try:
        memory["measured"] = model_bytes(build_model(directory, InMemoryFactStore.from_dir(facts_dir)))
    except ModelUnavailable as exc:
        memory["problem"] = str(exc)
    return memory


def _describe_published(args: argparse.Namespace) -> int:
    """A package only the repository holds: its head (what was published, when, by whom) and its manifest."""
    repository = _repository(args)
    asyncio.run(repository.refresh())
    head = repository.heads().get(args.model)
    if head is None:
        raise ModelUnavailable(f"no model {args.model!r} in {settings.models_dir(args)} nor in the repository "
                               f"{repository.topic}")
    manifest = head.manifest
    doc = {"id": head.id, "name": manifest.get("name"), "version": manifest.get("version"),
           "objective": manifest.get("objective"), "workflow": manifest.get("workflow"),
           "metrics": manifest.get("metrics", {}), "source": repository.topic,
           "package": {"sha256": head.sha256, "archive_bytes": head.size, "chunks": head.chunks,
                       "published_at_ms": head.published_at_ms, "published_by": head.published_by},
           "memory": {"declared": declared_bytes(manifest.get("weights", {})), "measured": None,
                      "problem": "not loaded here: scoreline models pull it to measure it"},
           "manifest": manifest}
    if args.json:
        emit_json(doc)
        return 0
    print(f"{head.id}  ({doc['objective']}, workflow {doc['workflow']}), published on {repository.topic}")
    print(f"  sha256     {head.sha256}")
    print(f"  archive    {head.size} bytes in {head.chunks} chunks, published by {head.published_by} at "
          f"{head.published_at_ms} ms")
    print(f"  memory     {doc['memory']['declared']} bytes of arrays declared")
    return 0
