"""Run the fault-injection scenarios against a broker and print the per-scenario table.

    SCORELINE_BOOTSTRAP=127.0.0.1:9092 .venv/bin/python scripts/fault_report.py [--scenario NAME ...] [--json]

The scenarios are the ones the fault suite tests (``tests/faults/fault_scenarios.py``); each
runs under a topic prefix of its own, deleted afterwards. The broker-restart scenario starts
(and removes) a second local broker of its own; the broker named here is never stopped.
Without ``--json`` a markdown table goes to standard output (the one in ``docs/reliability.md``);
with it, exactly one JSON object. Progress goes to standard error. Exit status 1 if any
scenario lost a request.
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

from fault_scenarios import SCENARIOS, Env, Tally, check, markdown  # noqa: E402

from streams.transport.settings import KafkaSettings  # noqa: E402
from workflows import ModelRegistry  # noqa: E402


async def run(bootstrap: str, names: list[str]) -> list[Tally]:
    from aiokafka.admin import AIOKafkaAdminClient

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
                admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka.security)
                await admin.start()
                try:
                    mine = [t for t in await admin.list_topics() if t.startswith(prefix)]
                    if mine:
                        await admin.delete_topics(mine)
                finally:
                    await admin.close()
        problems = check(tally) if tally.fault != "not run" else []
        print(f"{name}: {tally.requests} requests, {tally.lost} lost, {tally.duplicated} duplicated "
              f"in {time.monotonic() - began:.0f}s {'; '.join(problems)}", file=sys.stderr)
        tallies.append(tally)
    return tallies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default=os.environ.get("SCORELINE_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS),
                        help="run only this scenario (repeatable); default: all")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    tallies = asyncio.run(run(args.bootstrap, args.scenario or list(SCENARIOS)))
    ok = not any(check(t) for t in tallies if t.fault != "not run")
    if args.json:
        print(json.dumps({"ok": ok, "scenarios": [t.row() for t in tallies]}))
    else:
        print(markdown(tallies))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
