"""``scoreline broker start | stop | status | fetch``: the local Apache Kafka for development and tests."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from scoreline.output import emit_json, progress
from streams.broker.cluster import LocalCluster
from streams.broker.config import ClusterStatus
from streams.broker.local import BrokerSettings, LocalBroker


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("broker", help="run a local Apache Kafka (KRaft): one node, or a cluster of three")
    actions = parser.add_subparsers(dest="action", required=True)
    for name, helptext in (
        ("start", "start the broker or cluster (idempotent: starts only nodes not running) and print its bootstrap"),
        ("stop", "stop the broker or every node of the cluster cleanly"),
        ("status", "say whether the broker (or each node) runs, where, and which version"),
        ("fetch", "only resolve and cache the Kafka jars"),
    ):
        sub = actions.add_parser(name, help=helptext)
        sub.add_argument("--port", type=int, default=None,
                         help="client port of node 1 (default 9092, or SCORELINE_BROKER_PORT); "
                              "a cluster's nodes take consecutive ports, then their controllers")
        sub.add_argument("--nodes", type=int, default=None,
                         help="1 (a single broker) or 3 (a cluster: replication factor 3, min ISR 2); "
                              "default SCORELINE_BROKER_NODES, else the cluster once started on --port, else 1")
        sub.add_argument("--json", action="store_true", help="print one JSON object")
        sub.set_defaults(func=run)


def _target(args: argparse.Namespace) -> LocalBroker | LocalCluster:
    """The single broker or the cluster the arguments name."""
    nodes = args.nodes or (int(os.environ["SCORELINE_BROKER_NODES"]) if os.environ.get("SCORELINE_BROKER_NODES")
                           else None)
    if nodes is not None and nodes < 1:
        raise SystemExit("--nodes must be 1 or more")
    settings = BrokerSettings.from_env(port=args.port, nodes=nodes)
    if nodes is None and args.action != "start" and (found := LocalCluster.found(settings)) is not None:
        return found  # `status` / `stop` after `start --nodes 3` find the cluster by its port
    return LocalCluster(settings) if settings.nodes > 1 else LocalBroker(settings)


def run(args: argparse.Namespace) -> int:
    target = _target(args)
    if args.action == "fetch":
        broker = target.nodes[0] if isinstance(target, LocalCluster) else target
        libs = broker.fetch(progress)
        if args.json:
            emit_json({"libs": str(libs), "version": broker.settings.kafka_version})
        return 0
    if args.action == "start":
        began = time.monotonic()
        status = target.start(progress=progress)
        if args.json:
            emit_json({**status.as_dict(), "seconds": round(time.monotonic() - began, 2)})
        else:
            print(status.bootstrap)
            if isinstance(status, ClusterStatus):
                progress(f"Apache Kafka {status.version}: {len(status.nodes)} nodes running "
                         f"(pids {', '.join(str(n.pid) for n in status.nodes)}), data in "
                         f"{Path(status.nodes[0].data_dir).parent.parent}")
            else:
                progress(f"Apache Kafka {status.version} running (pid {status.pid}), data in {status.data_dir}")
        return 0
    if args.action == "stop":
        stopped = target.stop()
        if args.json:
            emit_json({"stopped": stopped})
        else:
            progress(("cluster stopped" if isinstance(target, LocalCluster) else "broker stopped") if stopped
                     else "no broker was running")
        return 0
    status = target.status()
    if args.json:
        emit_json(status.as_dict())
    elif isinstance(status, ClusterStatus):
        for node in status.nodes:
            print(f"node {node.node_id} {'running' if node.running else 'stopped'} 127.0.0.1:{node.port}"
                  + (f" pid {node.pid}" if node.running else "") + (" (active controller)" if node.controller else "")
                  + (f" leads {node.leader_partitions} partitions" if node.leader_partitions else ""))
        print(f"{'running' if status.running else 'not all running'} {status.bootstrap} Kafka {status.version}")
    else:
        print(f"{'running' if status.running else 'stopped'} {status.bootstrap} Kafka {status.version}"
              + (f" pid {status.pid}" if status.running else ""))
    return 0 if status.running else 3
