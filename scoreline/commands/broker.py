"""``scoreline broker start | stop | status | fetch``: the local Apache Kafka for development and tests."""

from __future__ import annotations

import argparse
import time

from scoreline.output import emit_json, progress
from streams.broker.local import BrokerSettings, LocalBroker


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("broker", help="run a local single-node Apache Kafka (KRaft)")
    actions = parser.add_subparsers(dest="action", required=True)
    for name, helptext in (
        ("start", "start the broker (idempotent) and print its bootstrap address"),
        ("stop", "stop the broker cleanly"),
        ("status", "say whether the broker runs, where, and which version"),
        ("fetch", "only resolve and cache the Kafka jars"),
    ):
        sub = actions.add_parser(name, help=helptext)
        sub.add_argument("--port", type=int, default=None, help="client port (default 9092, or SCORELINE_BROKER_PORT)")
        sub.add_argument("--json", action="store_true", help="print one JSON object")
        sub.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    broker = LocalBroker(BrokerSettings.from_env(port=args.port))
    if args.action == "fetch":
        libs = broker.fetch(progress)
        if args.json:
            emit_json({"libs": str(libs), "version": broker.settings.kafka_version})
        return 0
    if args.action == "start":
        began = time.monotonic()
        status = broker.start(progress=progress)
        if args.json:
            emit_json({**status.as_dict(), "seconds": round(time.monotonic() - began, 2)})
        else:
            print(status.bootstrap)
            progress(f"Apache Kafka {status.version} running (pid {status.pid}), data in {status.data_dir}")
        return 0
    if args.action == "stop":
        stopped = broker.stop()
        if args.json:
            emit_json({"stopped": stopped})
        else:
            progress("broker stopped" if stopped else "no broker was running")
        return 0
    status = broker.status()
    if args.json:
        emit_json(status.as_dict())
    else:
        print(f"{'running' if status.running else 'stopped'} {status.bootstrap} Kafka {status.version}"
              + (f" pid {status.pid}" if status.running else ""))
    return 0 if status.running else 3
