"""``scoreline init DIR``: a starter project (rules, one model package, facts) that ``scoreline run`` serves."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scoreline.output import emit_json
from scoreline.settings import ConfigError
from workflows.skeleton import new_package

_FACT = {
    "description": "An example fact: how many years each user has been a customer (unknown users: 0). "
                   "A workflow that lists it in its facts gets one lookup per batch.",
    "key": "user_id",
    "columns": ["tenure_years"],
    "default": [0.0],
    "rows": {"u-1": [2.0], "u-2": [0.5], "u-3": [7.0]},
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("init", help="write a starter project: rules, one model package, facts")
    parser.add_argument("dir", type=Path, metavar="DIR", help="the project directory (created; must not exist)")
    parser.add_argument("--objective", default="my-objective", help="the objective its model serves")
    parser.add_argument("--client", default="app", help="the client allowed to call it (default app)")
    parser.add_argument("--prefix", default="scoreline.", help="the topic prefix its reply topic is under")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def starter_rules(objective: str, model_id: str, client: str, prefix: str) -> dict:
    """Rules that route ``objective`` to ``model_id`` on one shard, callable by ``client``."""
    return {
        "version": 1,
        "shards": {"s1": {}},
        "models": {model_id: {"shard": "s1"}},
        "clients": {client: {"objectives": ["*"], "reply_topics": [f"{prefix}replies.{client}"]}},
        "objectives": {objective: {"shard_key": "context.user_id", "default": model_id}},
    }


def run(args: argparse.Namespace) -> int:
    root: Path = args.dir
    if root.exists():
        raise ConfigError(f"{root}: exists already; scoreline init writes a new project")
    if "." in args.client or not args.client:
        raise ConfigError(f"client {args.client!r}: a client name has no dots")
    model_id = f"{args.objective}@v1"
    try:
        package = new_package(root / "models", model_id, args.objective)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    (root / "facts").mkdir()
    (root / "facts" / "user_tenure.json").write_text(json.dumps(_FACT, indent=2) + "\n", encoding="utf-8")
    rules = starter_rules(args.objective, model_id, args.client, args.prefix)
    (root / "rules.json").write_text(json.dumps(rules, indent=2) + "\n", encoding="utf-8")
    flags = f"--rules {root}/rules.json --models-dir {root}/models --facts-dir {root}/facts"
    if args.json:
        emit_json({"dir": str(root), "rules": str(root / "rules.json"), "model": str(package),
                   "facts": str(root / "facts"), "run": f"scoreline run {flags}"})
        return 0
    print(f"wrote {root}/: rules.json, models/{model_id}/ (manifest.json, workflow.py, examples.json), facts/")
    print(f"  check the model:  scoreline models validate {package}")
    print(f"  serve it:         scoreline run {flags}")
    print(f"  call it:          scoreline send {flags} --client {args.client} --objective {args.objective} "
          "--context '{\"user_id\": \"u-1\"}' --payload '{\"x\": 0.5}'")
    return 0
