"""Where a command finds Kafka, the rules and the models: flags, then environment, then defaults."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from routing import Rules, load_rules
from scoreline.output import progress
from streams.broker import LocalBroker
from streams.kafka import KafkaSettings
from streams.topics import TopicLayout

__all__ = ["add_connection_arguments", "resolve_bootstrap", "kafka_settings", "layout", "load_example_rules",
           "EXAMPLES_DIR"]

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"


def add_connection_arguments(parser: argparse.ArgumentParser, *, rules: bool = True) -> None:
    """The flags every command that talks to Kafka shares."""
    parser.add_argument("--bootstrap", default=None,
                        help="Kafka bootstrap servers (default: SCORELINE_BOOTSTRAP, else the local broker, "
                             "started on demand)")
    parser.add_argument("--prefix", default=os.environ.get("SCORELINE_TOPIC_PREFIX", "scoreline."),
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
    """The rules file named by ``--rules`` / ``SCORELINE_RULES``, else the shipped example."""
    return load_rules(getattr(args, "rules", None) or EXAMPLES_DIR / "rules.json")
