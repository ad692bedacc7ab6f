"""``scoreline bench``: the pipeline measured beside a raw-aiokafka ceiling and a faust baseline."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses

from scoreline import settings
from scoreline.output import emit_json, progress
from streams.bench.runner import LAYOUTS, PIPELINES, ROUTING_PIPELINES, BenchPlan, run_bench
from workflows.training.reference import OBJECTIVES

MODEL_PIPELINES = ("scoreline", "mlserver", "quix")
"What a model-bound run serves the model with (the relay and faust score nothing, or not the model)."


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench", help="measure the pipeline beside its ceiling (raw aiokafka relay), Quix Streams and faust")
    settings.add_connection_arguments(parser, rules=False)
    parser.add_argument("--duration", type=float, default=20.0,
                        help="seconds of saturation per pipeline, split over the rounds; each fixed load runs a "
                             "quarter of it (default 20)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds of saturation, each pipeline in turn (default 3)")
    parser.add_argument("--unloaded", type=int, default=300,
                        help="sequential single requests per pipeline for its unloaded latency (default 300)")
    parser.add_argument("--rates", default="500,2000",
                        help="fixed offered loads for latency, requests/s, comma-separated (default 500,2000)")
    parser.add_argument("--load-seconds", type=float, default=None,
                        help="seconds per fixed offered load (default a quarter of --duration, at least 3)")
    parser.add_argument("--window", type=int, default=3000, help="requests in flight while saturating (default 3000)")
    parser.add_argument("--only", default=None,
                        help=f"pipelines to run, comma-separated (default {','.join(ROUTING_PIPELINES)}; "
                             f"with --model {','.join(MODEL_PIPELINES)})")
    parser.add_argument("--layout", choices=sorted(LAYOUTS), default="pair",
                        help="pair (default): every pipeline as two processes (a relay hop each; scoreline's "
                             "router | its workers; two faust workers); single: every pipeline in one process")
    parser.add_argument("--broker-warmup", type=float, default=10.0,
                        help="seconds of unreported load before the first pipeline, so a just-started broker "
                             "is as warm for the first pipeline as for the last (default 10; 0 skips it)")
    parser.add_argument("--model", choices=(*OBJECTIVES, "all"), default=None,
                        help="a model-bound run instead: a reference model (or all three, one after another) "
                             "served by scoreline, MLServer's Kafka server and Quix Streams beside the model's own "
                             "ceiling, loads at 25/50/75 %% of that ceiling (the reference models are built on first "
                             "use; docs/performance.md)")
    parser.add_argument("--json", action="store_true", help="print only the JSON report")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    plan = BenchPlan(duration=args.duration, latency_duration=args.load_seconds,
                     rates=tuple(float(r) for r in args.rates.split(",") if r),
                     window=args.window, layout=args.layout,
                     pipelines=tuple(p for p in (args.only or "").split(",") if p)
                     or (MODEL_PIPELINES if args.model else ROUTING_PIPELINES),
                     broker_warmup=args.broker_warmup, rounds=args.rounds, unloaded=args.unloaded)
    if args.model is not None:
        return _run_models(args, plan)
    report = asyncio.run(run_bench(settings.resolve_bootstrap(args), plan, progress))
    if args.json:
        emit_json(report)
    else:
        _print_table(report)
    return 0 if all((report.get(p) or {}).get("throughput_rps") for p in plan.pipelines) else 1


def _run_models(args: argparse.Namespace, plan: BenchPlan) -> int:
    """Each reference model named: its own model-bound bench; one report with every model's section."""
    models_dir = str(settings.reference_models() / "models")
    pipelines = plan.pipelines
    bootstrap = settings.resolve_bootstrap(args)
    reports = {}
    for model in OBJECTIVES if args.model == "all" else (args.model,):
        reports[model] = asyncio.run(run_bench(bootstrap, dataclasses.replace(
            plan, model=model, models_dir=models_dir, pipelines=pipelines), progress))
    combined = {"models": reports, "ratios": {"model": {m: r["ratios"]["model"][m] for m, r in reports.items()}}}
    if args.json:
        emit_json(combined)
    else:
        for model, report in reports.items():
            ceiling = report["model"]["ceiling"]
            print(f"== {model}: ceiling {ceiling['ceiling_rps']} requests/s ({ceiling['threads']} threads, batch "
                  f"{ceiling['best_batch']}); loads {report['model']['loads_rps']}")
            _print_table(report)
    return 0 if all((r.get(p) or {}).get("throughput_rps") for r in reports.values() for p in pipelines) else 1


def _print_table(report: dict) -> None:
    print(f"{'pipeline':<14} {'requests/s':>11} {'per round':>24}   latency ms p50/p95/p99: unloaded, then at each "
          "offered load")
    for name in PIPELINES:
        figures = report.get(name)
        if not figures:
            continue
        loads = "  ".join(f"{load}: {f['p50']}/{f['p95']}/{f['p99']}"
                          for load, f in {"unloaded": figures.get("unloaded_ms") or {},
                                          **(figures.get("latency_ms") or {})}.items() if f)
        rounds = ",".join(f"{r:.0f}" if r else "-" for r in figures.get("rounds_rps") or ())
        print(f"{name:<14} {figures.get('throughput_rps')!s:>11} {rounds:>24}   {loads}")
    hop = report.get("raw_hop_ms") or {}
    print(f"raw Kafka hop (one record there and back): p50/p95/p99 {hop.get('p50')}/{hop.get('p95')}/{hop.get('p99')}")
    print(f"ratios: {report['ratios']}")
