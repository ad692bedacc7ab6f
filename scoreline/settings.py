"""Where a command finds Kafka, the rules and the models: flags, then environment, then defaults."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from routing import Rules, load_rules, parse_rules
from scoreline.output import progress
from streams.broker.local import LocalBroker
from streams.topics import TopicLayout
from streams.transport.settings import KafkaSettings

__all__ = ["add_connection_arguments", "resolve_bootstrap", "kafka_settings", "layout", "load_example_rules",
           "EXAMPLES_DIR"]

DEFAULT_PREFIX = "scoreline."
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"


def add_connection_arguments(parser: argparse.ArgumentParser, *, rules: bool = True) -> None:
    """The flags every command that talks to Kafka shares."""
    parser.add_argument("--bootstrap", default=None,
                        help="Kafka bootstrap servers (default: SCORELINE_BOOTSTRAP, else the local broker, "
                             "started on demand)")
    parser.add_argument("--prefix", default=os.environ.get("SCORELINE_TOPIC_PREFIX", DEFAULT_PREFIX),
                        help="topic name prefix (default scoreline.)")
    if rules:
        parser.add_argument("--rules", default=os.environ.get("SCORELINE_RULES"),
                            help="routing rules file (default: the shipped examples/rules.json)")


def resolve_bootstrap(args: argparse.Namespace) -> str:
    """``--bootstrap``, then ``SCORELINE_BOOTSTRAP``, then the local broker (started if it is not running)."""
    if getattr(args, "bootstrap", None):
        return args.bootstrap
    if env := os.environ.get("SCORELINE_BOOTSTRAP"):
        return env
    return LocalBroker().start(progress=progress).bootstrap


def kafka_settings(args: argparse.Namespace) -> KafkaSettings:
    """Client settings for the resolved cluster."""
    return KafkaSettings.from_env(resolve_bootstrap(args))


def layout(args: argparse.Namespace) -> TopicLayout:
    """Topic names and partition counts (``SCORELINE_*_PARTITIONS``, ``SCORELINE_REPLICATION_FACTOR``)."""
    env = os.environ.get
    return TopicLayout(
        prefix=args.prefix,
        request_partitions=int(env("SCORELINE_REQUEST_PARTITIONS", "4")),
        shard_partitions=int(env("SCORELINE_SHARD_PARTITIONS", "4")),
        reply_partitions=int(env("SCORELINE_REPLY_PARTITIONS", "4")),
        replication_factor=int(env("SCORELINE_REPLICATION_FACTOR", "1")),
    )


def load_example_rules(args: argparse.Namespace) -> Rules:
    """The rules file named by ``--rules`` / ``SCORELINE_RULES``, else the shipped example.

    The shipped example names its reply topics under the default ``scoreline.`` prefix; with
    another ``--prefix`` they move under it, so the example works on any prefix. A file of
    your own is taken as written.
    """
    if path := getattr(args, "rules", None):
        return load_rules(path)
    prefix = getattr(args, "prefix", DEFAULT_PREFIX)
    text = (EXAMPLES_DIR / "rules.json").read_text()
    if prefix != DEFAULT_PREFIX:
        text = text.replace(f'"{DEFAULT_PREFIX}replies.', f'"{prefix}replies.')
    return parse_rules(json.loads(text))
