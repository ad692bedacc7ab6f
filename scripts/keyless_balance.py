"""The share of keyless requests a partition slowed 5x receives, with the router's balancing and without.

    .venv/bin/python scripts/keyless_balance.py [--runs N] [--rate R] [--seconds S] [--json]

Runs the scenario of ``tests/streams/services/keyless_scenario.py`` on the broker
``SCORELINE_BOOTSTRAP`` names (else the local one, started on demand): four partitions, the
worker of partition 0 five times slower, keyless requests at ``--rate``. Each run is made twice,
with power-of-two-choices (the default) and with ``balance=False`` (the router's own sends only,
an even spread). Prints one JSON object with ``--json``, else a markdown table (the one in
docs/operations.md). The topics of each run are deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "streams"), str(ROOT / "tests" / "streams" / "services"),
                str(ROOT / "tests" / "faults")]

from fault_scenarios import drop_topics  # noqa: E402
from keyless_scenario import as_dict, run_keyless  # noqa: E402

from streams.transport.settings import KafkaSettings  # noqa: E402


def _bootstrap() -> str:
    if bootstrap := os.environ.get("SCORELINE_BOOTSTRAP"):
        return bootstrap
    from streams.broker.local import LocalBroker

    return LocalBroker().start(timeout=180).bootstrap


async def _main(args: argparse.Namespace) -> dict:
    bootstrap = _bootstrap()
    runs = []
    for n in range(args.runs):
        for balance in (True, False):
            prefix = f"keyless{uuid.uuid4().hex[:8]}."
            print(f"run {n + 1}/{args.runs}, balance {'on' if balance else 'off'}", file=sys.stderr)
            try:
                runs.append(as_dict(await run_keyless(bootstrap, prefix, balance=balance, rate=args.rate,
                                                      seconds=args.seconds)))
            finally:
                await drop_topics(KafkaSettings(bootstrap=bootstrap), prefix)
    return {"rate": args.rate, "seconds": args.seconds, "slow_factor": 5.0, "runs": runs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=400.0, help="keyless requests per second (default 400)")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = asyncio.run(_main(args))
    if args.json:
        print(json.dumps(report))
        return 0
    print("| run | balancing | per partition (0 is slowed 5x) | slow partition's share | its lag at the end |")
    print("|---|---|---|---:|---:|")
    for i, run in enumerate(report["runs"]):
        print(f"| {i // 2 + 1} | {'two choices' if run['balance'] else 'even spread'} | {run['per_partition']} | "
              f"{run['slow_share']:.1%} | {run['slow_lag_at_end']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
