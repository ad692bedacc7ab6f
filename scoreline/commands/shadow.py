"""``scoreline shadow report``: aggregate the comparison topic per (objective, primary, shadow)."""

from __future__ import annotations

import argparse
import asyncio
import time

from schemas import codec
from schemas.errors import InvalidMessage
from scoreline import settings
from scoreline.output import emit_json, progress
from scoreline.shadow_report import format_table, parse_since, plot, summarize
from streams.transport.topic_reader import read_topic


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("shadow", help="shadow traffic: what the candidate models say")
    actions = parser.add_subparsers(dest="shadow_command", required=True)
    report = actions.add_parser("report", help="agreement, latency and errors of every shadowed model pair")
    settings.add_connection_arguments(report, rules=False)
    report.add_argument("--since", default=None,
                        help="only comparisons from this time: ISO (2026-01-31T12:00:00Z) or an age (30m, 1h, 2d); "
                             "default: the whole topic")
    report.add_argument("--objective", default=None, help="only this objective")
    report.add_argument("--json", action="store_true", help="print only the JSON report")
    report.add_argument("--plot", metavar="FILE.png", default=None,
                        help="also write a figure of agreement and latency-delta distributions (needs matplotlib: "
                             "pip install 'scoreline[report]')")
    report.add_argument("--timeout", type=float, default=60.0, help="seconds to read the topic (default 60)")
    report.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    since_ms = parse_since(args.since, int(time.time() * 1000)) if args.since else None
    layout = settings.layout(args)
    records = asyncio.run(read_topic(settings.kafka_settings(args), layout.shadow_comparisons, since_ms=since_ms,
                                     timeout=args.timeout))
    comparisons, skipped = [], 0
    for record in records:
        try:
            comparisons.append(codec.decode_comparison(record.value))
        except InvalidMessage as exc:
            skipped += 1
            progress(f"skipping {record.topic}:{record.partition}@{record.offset}: {exc}")
    report = summarize(comparisons, objective=args.objective)
    report["since_ms"] = since_ms
    report["undecodable"] = skipped
    if args.plot:
        plot(comparisons, report, args.plot)
        progress(f"wrote {args.plot}")
    if args.json:
        emit_json(report)
    else:
        print(format_table(report))
    return 0
