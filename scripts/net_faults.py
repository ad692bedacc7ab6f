"""Network faults between hosts of their own: partitions and slow links, counted request by request.

    sudo .venv/bin/python scripts/net_faults.py [--scenario NAME ...] [--runs N] [--json]

Builds seven hosts on this machine, each a network namespace on one bridge
(``tests/faults/netns.py``): three Kafka brokers, the router (with the shadow worker), two
workers, and the client, which runs the scenarios of ``tests/faults/net_scenarios.py``
(``worker_cut_off``, ``leader_isolated``, ``worker_one_way``, ``router_slow_link``,
``client_cut_off``; default: all), ``--runs`` times each (default 3). Everything is torn
down on exit, after a failure or a Ctrl-C too, and a later run removes what a killed one left.

Prints one JSON object with ``--json``:
``{"scenarios": [{"name", "runs": [{"sent", "answered", "dead_lettered", "lost", "duplicated",
"longest_gap_s", "shadow_unpaired", ...}]}], "hosts": {name: address}}``, else a markdown table
(the one in ``docs/reliability.md``). Progress on stderr. Exit status 1 if any run lost a
request, 2 if this machine cannot make network namespaces (the reason on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "faults")]

from fault_scenarios import check, drop_topics, span  # noqa: E402
from net_scenarios import HOSTS, NET_SCENARIOS, NetEnv, cluster_on, net_tally, restore  # noqa: E402
from netns import Host, Network, unavailable  # noqa: E402

from streams.broker.config import BrokerSettings  # noqa: E402
from streams.broker.local import LocalBroker  # noqa: E402
from workflows import ModelRegistry  # noqa: E402


def say(text: str) -> None:
    print(f"net_faults: {text}", file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", action="append", choices=sorted(NET_SCENARIOS))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--logs", type=Path, help="keep each run's broker and role logs under this directory")
    parser.add_argument("--inside", type=Path, help=argparse.SUPPRESS)  # the client host's half
    args = parser.parse_args()
    if args.inside is not None:
        return asyncio.run(inside(args))
    reason = unavailable()
    if reason is not None:
        say(f"cannot build the hosts: {reason}")
        return 2
    jars = LocalBroker(BrokerSettings()).fetch().parent  # in this namespace, before the hosts exist
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # tear down on a plain kill too
    with tempfile.TemporaryDirectory(prefix="scoreline-net-") as tmp, Network() as net:
        net.create(HOSTS)
        say("hosts: " + ", ".join(f"{h.name} {h.address}" for h in net.hosts.values()))
        state = Path(tmp) / "network.json"
        state.write_text(json.dumps({"owner": net.owner, "jars": str(jars), "tmp": tmp,
                                     "hosts": [vars(h) for h in net.hosts.values()]}))
        inner = [*net.hosts["c"].exec(), sys.executable, str(Path(__file__).resolve()), "--inside", str(state),
                 "--runs", str(args.runs), *(["--json"] if args.json else []),
                 *(["--logs", str(args.logs.resolve())] if args.logs else []),
                 *(arg for name in args.scenario or () for arg in ("--scenario", name))]
        return subprocess.run(inner, check=False).returncode


async def inside(args: argparse.Namespace) -> int:
    """On the client host: the cluster on its hosts, then every scenario, ``--runs`` times."""
    state = json.loads(args.inside.read_text())
    net = Network(owner=state["owner"], hosts={h["name"]: Host(**h) for h in state["hosts"]})
    home = Path(state["tmp"]) / "home"
    home.mkdir()
    (home / Path(state["jars"]).name).symlink_to(state["jars"])
    cluster = cluster_on(net, home)
    say("starting three brokers on b1, b2, b3 ...")
    await asyncio.to_thread(cluster.start, 240.0)
    registry = ModelRegistry.default()
    names = args.scenario or list(NET_SCENARIOS)
    report: dict = {"scenarios": [], "hosts": {h.name: h.address for h in net.hosts.values()}}
    try:
        for name in names:
            runs = []
            for run in range(1, args.runs + 1):
                prefix = f"net{uuid.uuid4().hex[:8]}."
                began = time.monotonic()
                say(f"{name} run {run}/{args.runs} under {prefix} ...")
                nenv = NetEnv.on(net, cluster, prefix, Path(state["tmp"]) / prefix.rstrip("."), registry)
                nenv.env.tmp.mkdir()
                try:
                    tally = await NET_SCENARIOS[name](nenv)
                except Exception as exc:  # noqa: BLE001 - a run that could not finish is reported, the rest go on
                    say(f"{name} run {run} failed: {exc!r}")
                    runs.append({"scenario": name, "error": repr(exc), "lost": None})
                    continue
                finally:
                    if args.logs is not None:
                        keep = args.logs / f"{name}-{run}"
                        shutil.copytree(nenv.env.tmp, keep, dirs_exist_ok=True)
                        for node in cluster.nodes:
                            shutil.copy(node.log_file, keep / f"b{node.node_id}.log")
                    await restore(nenv)
                    await drop_topics(nenv.env.kafka, prefix)
                problems = check(tally)
                say(f"{name} run {run}: {tally.requests} sent, {tally.results} answered, {tally.lost} lost, "
                    f"{tally.duplicated} duplicated, longest gap {tally.longest_gap_s} s, "
                    f"in {time.monotonic() - began:.0f} s {'; '.join(problems)}")
                runs.append(net_tally(tally))
            report["scenarios"].append({"name": name, "runs": runs})
    finally:
        await asyncio.to_thread(cluster.stop, 60.0)
    print(json.dumps(report) if args.json else markdown(report))
    return 1 if any(r["lost"] or "error" in r for s in report["scenarios"] for r in s["runs"]) else 0


def markdown(report: dict) -> str:
    """The table of ``docs/reliability.md``: each figure as the range over the runs."""
    lines = ["| scenario | runs | sent | answered | dead-lettered | lost | duplicated | longest gap s | "
             "longest wait s | shadow unpaired |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for scenario in report["scenarios"]:
        runs = [r for r in scenario["runs"] if "error" not in r]
        if len(runs) < len(scenario["runs"]):
            lines.append(f"| `{scenario['name']}` | {len(scenario['runs']) - len(runs)} failed to finish | "
                         + " | ".join(["-"] * 8) + " |")
        if not runs:
            continue
        cells = [span([r[k] for r in runs]) for k in ("sent", "answered", "dead_lettered", "lost", "duplicated",
                                                       "longest_gap_s", "longest_wait_s", "shadow_unpaired")]
        lines.append(f"| `{scenario['name']}` | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
