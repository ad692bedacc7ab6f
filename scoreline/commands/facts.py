"""``scoreline facts publish``: fact files onto their compacted, co-partitioned Kafka topics."""

from __future__ import annotations

import argparse
import asyncio

from scoreline import settings
from scoreline.lineage import shard_key_fields
from scoreline.output import emit_json, progress
from streams.facts.topic import publish_facts
from workflows import default_facts_dir


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("facts", help="publish facts to their Kafka topics")
    actions = parser.add_subparsers(dest="facts_command", required=True)
    publish = actions.add_parser("publish", help="publish fact files to scoreline.facts.<name> (compacted)")
    settings.add_connection_arguments(publish)
    publish.add_argument("--dir", default=None,
                         help="fact files (default: SCORELINE_FACTS_DIR, else the shipped scoreline/examples/facts)")
    publish.add_argument("--fact", action="append", help="publish only this fact (repeatable); default: all")
    publish.add_argument("--json", action="store_true", help="print one JSON object")
    publish.set_defaults(func=run_publish)


def run_publish(args: argparse.Namespace) -> int:
    directory = args.dir or default_facts_dir()
    rules = settings.load_example_rules(args)
    kafka, layout = settings.kafka_settings(args), settings.layout(args)
    progress(f"publishing facts from {directory} to {kafka.bootstrap} ...")
    report = asyncio.run(publish_facts(kafka, layout, directory, args.fact, shard_key_fields=shard_key_fields(rules)))
    if args.json:
        emit_json({"bootstrap": kafka.bootstrap, "facts": report})
        return 0
    for name, entry in report.items():
        scope = "co-partitioned" if entry["scope"] == "shard" else "global"
        print(f"{name:<20} {entry['rows']:>6} rows -> {entry['topic']} ({scope}, {entry['dtype']}, "
              f"per partition {entry['rows_per_partition']})")
    return 0
