"""``scoreline shadow report``: aggregate the comparison topic (or an export of it) per (objective, primary,
shadow); ``scoreline shadow export``: write the topic to a Parquet data set, incrementally."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from schemas import codec
from schemas.errors import InvalidMessage
from scoreline import settings
from scoreline.output import emit_json, progress
from scoreline.shadow_report import format_table, parse_since, plot, summarize
from streams.client.shadow_export import export_comparisons, read_export
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
    report.add_argument("--from", dest="source", type=Path, default=None, metavar="DIR",
                        help="read a `shadow export` directory instead of the topic (needs scoreline[data])")
    report.add_argument("--timeout", type=float, default=60.0,
                        help="give up once reading the topic made no progress for this many seconds (default 60)")
    report.set_defaults(func=run_report)

    export = actions.add_parser(
        "export", help="write the comparison topic to Parquet under DIR, partitioned objective=/date= (incremental)",
        description="Each run writes only what the topic holds past the last run, each (request id, shadow model) "
                    "pair once; a kill at any point loses nothing and writes nothing twice. Query the result with "
                    "DuckDB, Spark or pandas (docs/shadow.md). Needs pip install 'scoreline[data]'.")
    settings.add_connection_arguments(export, rules=False)
    export.add_argument("--to", type=Path, required=True, metavar="DIR", help="the export's directory")
    export.add_argument("--timeout", type=float, default=60.0,
                        help="give up once reading the topic made no progress for this many seconds (default 60)")
    export.add_argument("--json", action="store_true", help="print only the JSON summary (no progress)")
    export.set_defaults(func=run_export)


def run_report(args: argparse.Namespace) -> int:
    since_ms = parse_since(args.since, int(time.time() * 1000)) if args.since else None
    comparisons, skipped = [], 0
    if args.source is not None:
        comparisons = list(read_export(args.source, objective=args.objective, since_ms=since_ms))
    else:
        layout = settings.layout(args)
        records = asyncio.run(read_topic(settings.kafka_settings(args), layout.shadow_comparisons,
                                         since_ms=since_ms, timeout=args.timeout))
        for record in records:
            try:
                comparisons.append(codec.decode_comparison(record.value))
            except InvalidMessage as exc:
                skipped += 1
                progress(f"skipping {record.topic}:{record.partition}@{record.offset}: {exc}")
    report = summarize(comparisons, objective=args.objective)
    report["source"] = str(args.source) if args.source is not None else "topic"
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


def run_export(args: argparse.Namespace) -> int:
    layout = settings.layout(args)
    tty = sys.stderr.isatty() and not args.json

    def write(text: str) -> None:
        if not args.json:
            sys.stderr.write(text)
            sys.stderr.flush()

    summary = asyncio.run(export_comparisons(settings.kafka_settings(args), layout.shadow_comparisons, args.to,
                                             write, tty=tty, timeout=args.timeout))
    if args.json:
        emit_json(summary)
    else:
        print(f"{summary['read']:,} comparisons read, {summary['written']:,} written in {summary['parts']} parts, "
              f"{summary['repeats_dropped']:,} repeats dropped, {summary['undecodable']} undecodable; "
              f"{summary['exported']:,} in {summary['to']}")
    return 0
