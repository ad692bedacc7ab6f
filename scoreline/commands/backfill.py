"""``scoreline backfill FILE``: publish a file of requests as backfill traffic and write out the results."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path

from scoreline import settings
from scoreline.output import emit_json, progress
from streams.client.backfill import BackfillOptions, backfill, check_options, parse_rate, router_running
from streams.services.pipeline import Pipeline


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "backfill", help="publish a JSON Lines file of requests as backfill traffic; write one result per line",
        description="Each line is a request in the contract's format; request_id, client (default demo), "
                    "reply_to and objective are filled in where missing and traffic is set to backfill. "
                    "Request ids are stable (bf-<sha1 of the file>-<line>), so --resume after an interruption "
                    "publishes only the lines that have no output yet and drops repeated results.")
    settings.add_connection_arguments(parser)
    settings.add_config_arguments(parser)
    parser.add_argument("file", type=Path, help="JSON Lines file, one request per line")
    parser.add_argument("--objective", required=True, help="the objective of every line, e.g. title-ranking")
    parser.add_argument("--client", default="demo", help="the client of lines that name none (default demo)")
    parser.add_argument("--rate", default=None, help="publish at most this many requests: 500/s, 3000/m (default: "
                                                     "no limit; live traffic is still served first)")
    parser.add_argument("--out", type=Path, default=None,
                        help="write one JSON line per input line: the result plus \"line\" (1-based)")
    parser.add_argument("--resume", action="store_true", help="continue into --out: publish only lines without output")
    parser.add_argument("--window", type=int, default=1000,
                        help="requests in flight at most (default 1000); smaller keeps live latency lower")
    parser.add_argument("--idle-timeout", type=float, default=60.0,
                        help="give up once no result arrived for this many seconds (default 60)")
    parser.add_argument("--json", action="store_true", help="print only a JSON summary on stdout")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    summary = asyncio.run(_backfill(args))
    if args.json:
        emit_json(summary)
    else:
        r = summary["results"]
        print(f"{summary['lines']} lines: {summary['published']} published, {summary['skipped']} already done, "
              f"{summary['malformed']['count']} malformed; results {r['ok']} ok, {r['error']} error, "
              f"{r['expired']} expired; {summary['duplicates_dropped']} duplicates dropped; "
              f"{summary['unanswered']} unanswered; {summary['seconds']}s")
    return 0 if summary["unanswered"] == 0 and summary["send_failures"] == 0 else 1


async def _backfill(args: argparse.Namespace) -> dict:
    options = BackfillOptions(path=args.file, objective=args.objective, client=args.client,
                              rate=parse_rate(args.rate), out=args.out, resume=args.resume,
                              window=args.window, idle_timeout=args.idle_timeout)
    check_options(options)
    kafka = settings.kafka_settings(args)
    layout = settings.layout(args)
    tty = sys.stderr.isatty()

    def write(text: str) -> None:
        sys.stderr.write(text)
        sys.stderr.flush()

    async with contextlib.AsyncExitStack() as stack:
        if not await router_running(kafka, layout):
            progress("no scoreline router is running on this cluster; serving the backfill in-process "
                     "(`scoreline run` keeps one running)")
            pipeline = await stack.enter_async_context(
                Pipeline(kafka, layout, settings.load_example_rules(args), settings.model_registry(args)))
            await pipeline.wait_ready()
        return await backfill(kafka, layout, options, write, tty=tty)
