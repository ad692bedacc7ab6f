"""``scoreline lineage``: objective -> rules -> models -> workflow -> facts -> topics and files, and impact."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from scoreline import settings
from scoreline.lineage import FactSource, Lineage, build_lineage, parse_target
from scoreline.output import emit_json
from streams.rollouts.client import RolloutClient
from workflows import InMemoryFactStore, ModelRegistry, ModelUnavailable, package_sha256


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags naming the configuration a lineage is drawn from (no Kafka needed)."""
    parser.add_argument("--rules", default=os.environ.get("SCORELINE_RULES"),
                        help="routing rules file (default: SCORELINE_RULES, else the shipped example rules)")
    parser.add_argument("--prefix", default=os.environ.get("SCORELINE_TOPIC_PREFIX", "scoreline."),
                        help="topic name prefix (default scoreline.)")
    settings.add_config_arguments(parser, serving=False)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("lineage", help="show which objectives, rules, models and facts depend on what")
    add_source_arguments(parser)
    parser.add_argument("--impact", metavar="fact:NAME|model:ID",
                        help="list the models and objectives that depend on this fact or model")
    parser.add_argument("--bootstrap", default=os.environ.get("SCORELINE_BOOTSTRAP"),
                        help="also read the guarded rollouts from this cluster (default SCORELINE_BOOTSTRAP; "
                             "without one the lineage is drawn offline, rollouts left out)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def _shown(path: Path) -> str:
    """A path relative to the working directory when it is under it (readable output)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def load_lineage(args: argparse.Namespace, registry: ModelRegistry | None = None) -> Lineage:
    """The lineage of the configuration the flags name: rules, model packages, fact files, topic prefix."""
    facts_dir = settings.facts_dir(args)
    registry = registry or ModelRegistry(settings.models_dir(args), InMemoryFactStore())
    store = InMemoryFactStore.from_dir(facts_dir) if facts_dir.is_dir() else InMemoryFactStore()
    found = sorted(facts_dir.glob("*")) if facts_dir.is_dir() else []
    files = {f.stem: f for f in found if f.suffix in (".npz", ".json")}
    sources = {name: FactSource(store.spec(name).key, _shown(files[name]) if name in files else None)
               for name in store.facts()}
    manifests, problems, digests = [], {}, {}
    for model_id in registry.ids():
        try:
            manifests.append(registry.manifest(model_id))
            digests[model_id] = package_sha256(registry.models_dir / model_id)
        except ModelUnavailable as exc:
            problems[model_id] = str(exc)
    return build_lineage(settings.load_example_rules(args), manifests, sources,
                         settings.layout(args).facts, problems=problems, sha256=digests)


def run(args: argparse.Namespace) -> int:
    lineage = load_lineage(args)
    if args.bootstrap:
        client = RolloutClient(settings.kafka_settings(args), settings.layout(args))
        lineage.rollouts = [r.to_json() for r in asyncio.run(client.read()).history()]
    if args.impact:
        impact = lineage.impact(*parse_target(args.impact))
        if args.json:
            emit_json(impact)
        else:
            print(_render_impact(impact))
        return 0
    if args.json:
        emit_json(lineage.to_dict())
    else:
        print(lineage.render())
    return 0


def _render_impact(impact: dict) -> str:
    lines = [f"impact of {impact['target']}"]
    models = impact["models"]
    lines.append(f"├── models ({len(models)})")
    for i, model in enumerate(models):
        uses = [u for u in impact["uses"] if u["model"] == model]
        last = i == len(models) - 1
        lines.append(f"│   {'└──' if last else '├──'} {model}" + ("  (not routed)" if not uses else ""))
        for j, use in enumerate(uses):
            pad = "│   " + ("    " if last else "│   ")
            lines.append(f"{pad}{'└──' if j == len(uses) - 1 else '├──'} {use['objective']}: {use['role']}  "
                         f"({use['path']})")
    objectives = impact["objectives"]
    lines.append(f"└── objectives ({len(objectives)})")
    for i, objective in enumerate(objectives):
        lines.append(f"    {'└──' if i == len(objectives) - 1 else '├──'} {objective}")
    return "\n".join(lines)
