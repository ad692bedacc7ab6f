"""``scoreline replay``: republish a time range of a request topic as backfill traffic."""

from __future__ import annotations

import argparse
import asyncio
import time

from scoreline import settings
from scoreline.output import emit_json, progress
from streams.client.backfill import parse_rate, parse_time, replay


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "replay", help="republish the requests a topic holds in a time range, as backfill traffic",
        description="Reads --from-topic from the first record at or after --since up to the first at or after "
                    "--until (default: the end as of now), rewrites each request's traffic to backfill, drops its "
                    "deadline, and publishes it on the backfill request topic. Results go to each request's "
                    "original reply_to, under the original request id unless --new-ids.")
    settings.add_connection_arguments(parser, rules=False)
    parser.add_argument("--from-topic", required=True, help="the topic holding the requests, e.g. scoreline.requests")
    parser.add_argument("--since", required=True,
                        help="start time: ISO 8601 (UTC unless zoned), epoch ms, or a duration ago (15m, 2h, 1d)")
    parser.add_argument("--until", default=None, help="end time, exclusive (same forms; default: now)")
    parser.add_argument("--objective", default=None, help="replay only requests for this objective")
    parser.add_argument("--new-ids", action="store_true",
                        help="give replayed requests new stable ids rp-<sha1(topic/partition/offset)> "
                             "instead of their original ones")
    parser.add_argument("--rate", default=None, help="publish at most this many requests: 500/s, 3000/m")
    parser.add_argument("--json", action="store_true", help="print only a JSON summary on stdout")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    now = int(time.time() * 1000)
    since = parse_time(args.since, now, name="since")
    until = parse_time(args.until, now, name="until") if args.until else None
    summary = asyncio.run(replay(settings.kafka_settings(args), settings.layout(args), args.from_topic, since, until,
                                 objective=args.objective, new_ids=args.new_ids, rate=parse_rate(args.rate),
                                 progress=progress))
    if args.json:
        emit_json(summary)
    else:
        print(f"replayed {summary['published']} of {summary['scanned']} records from {summary['topic']} "
              f"(skipped {summary['skipped']}) in {summary['seconds']}s")
    return 0
