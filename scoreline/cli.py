"""The ``scoreline`` command line: parses arguments and hands each command to its module."""

from __future__ import annotations

import argparse
import os
import sys

from schemas.errors import ScorelineError
from scoreline import logging_setup
from scoreline.commands import (
    backfill,
    bench,
    broker,
    demo,
    facts,
    init,
    lineage,
    models,
    placement,
    replay,
    rollout,
    rules,
    run,
    send,
    shadow,
    top,
)

COMMANDS = [broker, init, run, send, demo, rules, bench, backfill, replay, models, placement, facts, lineage, shadow,
            rollout, top]


def build_parser() -> argparse.ArgumentParser:
    """The whole command-line surface."""
    parser = argparse.ArgumentParser(prog="scoreline", description="A Kafka-native model serving router.")
    parser.add_argument("--log-level", default=os.environ.get("SCORELINE_LOG_LEVEL", "WARNING"))
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``scoreline`` console script."""
    args = build_parser().parse_args(argv)
    logging_setup.configure(args.log_level, stream=sys.stderr)  # JSON lines unless stderr is a terminal
    try:
        return args.func(args)
    except ScorelineError as exc:
        print(f"scoreline: error [{exc.code}]: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
