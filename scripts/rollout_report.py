"""The guarded-rollout scenarios of ``tests/faults/rollout_scenarios.py``, run and tabulated (docs/rollouts.md).

    .venv/bin/python scripts/rollout_report.py [--runs 3] [--scenario NAME ...] [--json]

Each run streams title-ranking requests at a steady rate through a pipeline on the broker
(``--bootstrap``, default ``SCORELINE_BOOTSTRAP`` else 127.0.0.1:9092), under a topic prefix of
its own (deleted afterwards), and rolls ``title-ranking@v2`` out: healthy with its controller
killed mid-step, failing a third of its requests, three times slower. The table gives each
step's samples and time to its decision, and the requests sent, lost and duplicated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "faults")]

from fault_scenarios import Env, drop_topics  # noqa: E402
from rollout_scenarios import ROLLOUT_SCENARIOS, RolloutOutcome  # noqa: E402

from streams.transport.settings import KafkaSettings  # noqa: E402
from workflows import ModelRegistry  # noqa: E402


async def run(bootstrap: str, names: list[str], runs: int) -> list[RolloutOutcome]:
    kafka = KafkaSettings.from_env(bootstrap)
    registry = ModelRegistry.default()
    outcomes = []
    for _ in range(runs):
        for name in names:
            prefix = f"rollout{uuid.uuid4().hex[:8]}."
            print(f"{name}: running under {prefix} ...", file=sys.stderr)
            with tempfile.TemporaryDirectory(prefix="scoreline-rollouts-") as tmp:
                try:
                    outcome = await ROLLOUT_SCENARIOS[name](Env.make(kafka, prefix, Path(tmp), registry))
                finally:
                    await drop_topics(kafka, prefix)
            print(f"{name}: {outcome.state} in {outcome.seconds:.1f}s; {outcome.tally.requests} requests, "
                  f"{outcome.tally.lost} lost", file=sys.stderr)
            outcomes.append(outcome)
    return outcomes


def markdown(outcomes: list[RolloutOutcome]) -> str:
    lines = ["| scenario | ended | steps (percent: decision, candidate / incumbent results, seconds) | "
             "to the end (s) | requests | lost | duplicated |", "|---|---|---|---:|---:|---:|---:|"]
    for o in outcomes:
        steps = "; ".join(f"{s['percent']:g}%: {s['decision']}"
                          + (f", {s['candidate']} / {s['incumbent']}, {s['seconds']}s" if s["candidate"] is not None
                             else "")
                          for s in o.steps if s["rules_version"] is not None)
        lines.append(f"| {o.scenario} | {o.state} | {steps} | {o.seconds:.1f} | {o.tally.requests} | "
                     f"{o.tally.lost} | {o.tally.duplicated} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default=os.environ.get("SCORELINE_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--scenario", action="append", choices=sorted(ROLLOUT_SCENARIOS),
                        help="run only this scenario (repeatable); default: all")
    parser.add_argument("--runs", type=int, default=1, help="runs of each scenario")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    outcomes = asyncio.run(run(args.bootstrap, args.scenario or list(ROLLOUT_SCENARIOS), args.runs))
    ok = all(o.tally.lost == 0 and o.unversioned == 0 for o in outcomes)
    if args.json:
        print(json.dumps({"ok": ok, "scenarios": [o.row() for o in outcomes]}))
    else:
        print(markdown(outcomes))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
