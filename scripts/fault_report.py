"""Run the fault-injection scenarios against a broker and print the per-scenario table.

    SCORELINE_BOOTSTRAP=127.0.0.1:9092 .venv/bin/python scripts/fault_report.py [--scenario NAME ...] [--json]
    .venv/bin/python scripts/fault_report.py --cluster [--runs 3] [--scenario NAME ...] [--json]

The scenarios are the ones the fault suite tests (``tests/faults/fault_scenarios.py``); each
runs under a topic prefix of its own, deleted afterwards. The broker-restart scenario starts
(and removes) a second local broker of its own; the broker named here is never stopped.
Without ``--json`` a markdown table goes to standard output (the one in ``docs/reliability.md``);
with it, exactly one JSON object. Progress goes to standard error. Exit status 1 if any
scenario lost a request.

``--cluster`` runs the broker faults of ``tests/faults/cluster_scenarios.py`` instead, on a
three-node cluster of its own (RF 3, min ISR 2, free ports, a temporary home; stopped and
removed afterwards), ``--runs`` times each; the table then gives each figure as the range
over the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "faults")]

from cluster_scenarios import CLUSTER_SCENARIOS, ClusterEnv, restore  # noqa: E402
from fault_scenarios import SCENARIOS, Env, Tally, check, drop_topics, free_port_run, markdown, span  # noqa: E402

from streams.transport.settings import KafkaSettings  # noqa: E402
from workflows import ModelRegistry  # noqa: E402


async def run(bootstrap: str, names: list[str]) -> list[Tally]:

    kafka = KafkaSettings.from_env(bootstrap)
    registry = ModelRegistry.default()
    tallies = []
    for name in names:
        prefix = f"fault{uuid.uuid4().hex[:8]}."
        began = time.monotonic()
        print(f"{name}: running under {prefix} ...", file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix="scoreline-faults-") as tmp:
            env = Env.make(kafka, prefix, Path(tmp), registry)
            try:
                tally = await SCENARIOS[name](env)
            except NotImplementedError as exc:
                tally = Tally(scenario=name, fault="not run", note=str(exc))
            finally:
                await drop_topics(kafka, prefix)
        problems = check(tally) if tally.fault != "not run" else []
        print(f"{name}: {tally.requests} requests, {tally.lost} lost, {tally.duplicated} duplicated "
              f"in {time.monotonic() - began:.0f}s {'; '.join(problems)}", file=sys.stderr)
        tallies.append(tally)
    return tallies


async def run_cluster(names: list[str], runs: int) -> list[Tally]:
    """Each scenario ``runs`` times on a private three-node cluster."""

    from streams.broker.cluster import LocalCluster
    from streams.broker.local import BrokerSettings, LocalBroker

    registry = ModelRegistry.default()
    tallies = []
    with tempfile.TemporaryDirectory(prefix="scoreline-cluster-") as home:
        jars = LocalBroker(BrokerSettings()).fetch(lambda line: print(line, file=sys.stderr)).parent
        (Path(home) / jars.name).symlink_to(jars)
        cluster = LocalCluster(BrokerSettings(port=free_port_run(6), nodes=3, home=Path(home), heap="384m"))
        print(f"starting a three-node cluster on {cluster.bootstrap} ...", file=sys.stderr)
        await asyncio.to_thread(cluster.start, 240.0)
        try:
            for run_number in range(1, runs + 1):
                for name in names:
                    prefix = f"cfault{uuid.uuid4().hex[:8]}."
                    began = time.monotonic()
                    with tempfile.TemporaryDirectory(prefix="scoreline-faults-") as tmp:
                        await restore(cluster)
                        tally = await CLUSTER_SCENARIOS[name](ClusterEnv.make(cluster, prefix, Path(tmp), registry))
                    await drop_topics(KafkaSettings.from_env(cluster.bootstrap), prefix)
                    print(f"{name} (run {run_number}): {tally.requests} requests, {tally.lost} lost, "
                          f"{tally.duplicated} duplicated, longest gap {tally.longest_gap_s} s "
                          f"in {time.monotonic() - began:.0f}s {'; '.join(check(tally))}", file=sys.stderr)
                    tallies.append(tally)
        finally:
            await asyncio.to_thread(cluster.stop, 60.0)
    return tallies


def ranges(tallies: list[Tally]) -> str:
    """The cluster table of ``docs/reliability.md``: each scenario's figures as min-max over its runs."""
    by_name: dict[str, list[Tally]] = {}
    for t in tallies:
        by_name.setdefault(t.scenario, []).append(t)
    lines = ["| scenario | fault | runs | requests | lost | duplicated | dead letters | longest gap (s) "
             "| recovery (s) | shadow copies unpaired |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, group in by_name.items():
        lines.append(f"| {name} | {group[0].fault} | {len(group)} | {span([t.requests for t in group])} "
                     f"| {span([t.lost for t in group])} | {span([t.duplicated for t in group])} "
                     f"| {span([t.dead_letters for t in group])} | {span([t.longest_gap_s for t in group])} "
                     f"| {span([t.recovery_s for t in group])} | {span([t.shadow_unpaired for t in group])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default=os.environ.get("SCORELINE_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS | CLUSTER_SCENARIOS),
                        help="run only this scenario (repeatable); default: all")
    parser.add_argument("--cluster", action="store_true",
                        help="the broker faults on a three-node cluster of its own (RF 3, min ISR 2)")
    parser.add_argument("--runs", type=int, default=1, help="with --cluster: runs of each scenario")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    scenarios = CLUSTER_SCENARIOS if args.cluster else SCENARIOS
    unknown = [name for name in args.scenario or () if name not in scenarios]
    if unknown:
        parser.error(f"not a {'cluster ' if args.cluster else ''}scenario: {', '.join(unknown)}")
    names = args.scenario or list(scenarios)
    tallies = (asyncio.run(run_cluster(names, args.runs)) if args.cluster
               else asyncio.run(run(args.bootstrap, names)))
    ok = not any(check(t) for t in tallies if t.fault != "not run")
    if args.json:
        print(json.dumps({"ok": ok, "scenarios": [t.row() for t in tallies]}))
    else:
        print(ranges(tallies) if args.cluster else markdown(tallies))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
