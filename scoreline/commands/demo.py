"""``scoreline demo``: the whole pipeline end to end on the local broker, with a JSON summary."""

from __future__ import annotations

import argparse
import asyncio

from routing import parse_rules
from scoreline import settings
from scoreline.demo import DemoPlan, run_demo
from scoreline.output import emit_json, progress
from workflows.training.reference import reference_rules


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the whole pipeline end to end and account for every request")
    settings.add_connection_arguments(parser)
    settings.add_config_arguments(parser)
    parser.add_argument("--requests", type=int, default=2000, help="good requests per objective (default 2000)")
    parser.add_argument("--bad-per-kind", type=int, default=5, help="bad inputs of each kind (default 5)")
    parser.add_argument("--concurrency", type=int, default=200, help="requests in flight (default 200)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for every outcome")
    parser.add_argument("--models", choices=("examples", "reference"), default="examples",
                        help="examples: the shipped example models (default); reference: the reference models of "
                             "realistic size (built on first use, needs the train extra; see docs/workflows.md)")
    parser.add_argument("--json", action="store_true", help="print only the JSON summary")
    parser.add_argument("--metrics-port", type=int, default=0,
                        help="serve the demo pipeline's /metrics on this port while it runs, for "
                             "`scoreline top` (default 0: off)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    plan = DemoPlan(requests=args.requests, bad_per_kind=args.bad_per_kind, concurrency=args.concurrency,
                    timeout=args.timeout, metrics_port=args.metrics_port or None)
    if args.models == "reference":
        if args.models_dir or args.rules:
            raise settings.ConfigError("--models reference brings its own models and rules: drop --models-dir "
                                       "and --rules, or serve those without it")
        args.models_dir = str(settings.reference_models() / "models")
        rules = parse_rules(reference_rules(args.prefix))
    else:
        rules = settings.load_example_rules(args)
    summary = asyncio.run(run_demo(settings.kafka_settings(args), settings.layout(args), rules,
                                   settings.model_registry(args), plan, progress))
    if args.json:
        emit_json(summary)
    else:
        _print_table(summary)
    return 0 if summary["missing"] == 0 else 1


def _print_table(summary: dict) -> None:
    results = summary["results"]
    print(f"sent {summary['sent']} requests ({summary['bad_sent']} bad on purpose)")
    print(f"results: {results['ok']} ok, {results['error']} error, {results['expired']} expired")
    for objective, entry in summary["by_objective"].items():
        counts = entry["results"]
        models = ", ".join(f"{model} {n}" for model, n in entry["models"].items())
        print(f"  {objective:<20} {counts['ok']} ok, {counts['error']} error, {counts['expired']} expired  ({models})")
    print(f"dead letters: {summary['dead_lettered']} {summary['dead_letters_by_code']}")
    shadow = summary["shadow_results"]
    print(f"shadow records: {shadow['primary']} primary, {shadow['shadow']} shadow")
    print(f"missing {summary['missing']}, duplicates {summary['duplicates']}")
    lat = summary["latency_ms"]
    print(f"latency p50 {lat['p50']} ms, p99 {lat['p99']} ms; throughput {summary['throughput_rps']} requests/s")
