"""``scoreline backfill FILE``: publish a file of requests as backfill traffic and write out the results."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path

from scoreline import settings
from scoreline.commands.top import DEFAULT_ENDPOINT, endpoint_url
from scoreline.output import emit_json, progress
from streams.client.backfill import BackfillOptions, Columns, backfill, check_options, parse_rate, router_running
from streams.client.backfill_tables import FORMATS, input_format, release_memory_promptly
from streams.client.governor import MetricsSignal
from streams.services.pipeline import Pipeline


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "backfill", help="publish a file (or directory) of requests as backfill traffic; write one result per row",
        description="Reads JSON Lines, Parquet or CSV (by extension, or --format), a file or a directory of files. "
                    "A JSON line is a request in the contract's format; a table's columns map to requests (see "
                    "--id-col, --context-cols, --payload-cols). request_id, client (default demo), reply_to and "
                    "objective are filled in where missing and traffic is set to backfill. Request ids are stable "
                    "(bf-<sha1 of the input>-<row>), so --resume after an interruption publishes only the rows "
                    "that have no result yet and drops repeated results. Without --rate the backfill watches "
                    "live traffic's latency on the workers' metrics and shrinks its window while it rises.")
    settings.add_connection_arguments(parser)
    settings.add_config_arguments(parser)
    parser.add_argument("file", type=Path, help="a .jsonl, .parquet or .csv file, or a directory of them")
    parser.add_argument("--format", choices=FORMATS, default=None, help="the input's format (default: by extension)")
    parser.add_argument("--id-col", default=None,
                        help="the column holding request ids (default request_id, if the table has it; else ids "
                             "are derived from the row number)")
    parser.add_argument("--context-cols", default=None, metavar="A,B,...",
                        help="columns gathered into the context (default: a column named context)")
    parser.add_argument("--payload-cols", default=None, metavar="A,B,...",
                        help="columns gathered into the payload (default: a column named payload, else every "
                             "column not used otherwise)")
    parser.add_argument("--objective", required=True, help="the objective of every line, e.g. title-ranking")
    parser.add_argument("--client", default="demo", help="the client of lines that name none (default demo)")
    parser.add_argument("--rate", default=None, help="publish at most this many requests: 500/s, 3000/m (default: "
                                                     "no fixed rate; the window follows live latency)")
    parser.add_argument("--out", type=Path, default=None,
                        help="write one result per input row: Parquet if it ends in .parquet (typed columns, "
                             "row and request_id to join on), else JSON Lines (the result plus \"line\", 1-based)")
    parser.add_argument("--resume", action="store_true", help="continue into --out: publish only rows without a result")
    parser.add_argument("--window", type=int, default=1000,
                        help="requests in flight at most (default 1000); the governor keeps it lower while live "
                             "latency rises")
    parser.add_argument("--metrics", action="append", metavar="URL", default=None,
                        help="a worker's metrics endpoint to watch live latency on, URL or host:port (repeatable; "
                             f"default {DEFAULT_ENDPOINT}, or the in-process pipeline's)")
    parser.add_argument("--no-govern", action="store_true",
                        help="do not watch live latency: keep the whole --window in flight")
    parser.add_argument("--idle-timeout", type=float, default=60.0,
                        help="give up once no result arrived for this many seconds (default 60)")
    parser.add_argument("--json", action="store_true",
                        help="print only a JSON summary on stdout (no progress bar; rejected rows still on stderr)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    summary = asyncio.run(_backfill(args))
    if args.json:
        emit_json(summary)
    else:
        r = summary["results"]
        print(f"{summary['lines']} rows: {summary['published']} published, {summary['skipped']} already done, "
              f"{summary['malformed']['count']} malformed; results {r['ok']} ok, {r['error']} error, "
              f"{r['expired']} expired; {summary['duplicates_dropped']} duplicates dropped; "
              f"{summary['unanswered']} unanswered; {summary['seconds']}s")
    return 0 if summary["unanswered"] == 0 and summary["send_failures"] == 0 else 1


async def _backfill(args: argparse.Namespace) -> dict:
    options = BackfillOptions(path=args.file, objective=args.objective, client=args.client,
                              rate=parse_rate(args.rate), out=args.out, resume=args.resume,
                              window=args.window, idle_timeout=args.idle_timeout, format=args.format,
                              columns=Columns.parse(args.id_col, args.context_cols, args.payload_cols),
                              govern=not args.no_govern)
    check_options(options)
    parquet_out = options.out is not None and options.out.suffix.lower() == ".parquet"
    if parquet_out or input_format(options.path, options.format) != "jsonl":
        release_memory_promptly()
    kafka = settings.kafka_settings(args)
    layout = settings.layout(args)
    tty = sys.stderr.isatty()

    def write(text: str) -> None:
        sys.stderr.write(text)
        sys.stderr.flush()

    live = MetricsSignal.from_urls([endpoint_url(m) for m in args.metrics or [DEFAULT_ENDPOINT]])
    async with contextlib.AsyncExitStack() as stack:
        if not await router_running(kafka, layout):
            progress("no scoreline router is running on this cluster; serving the backfill in-process "
                     "(`scoreline run` keeps one running)")
            pipeline = await stack.enter_async_context(
                Pipeline(kafka, layout, settings.load_example_rules(args), settings.model_registry(args)))
            await pipeline.wait_ready()
            if not args.metrics:
                live = MetricsSignal.from_exposition(pipeline.metrics.exposition)
        return await backfill(kafka, layout, options, write, tty=tty, live=live, quiet=args.json)
