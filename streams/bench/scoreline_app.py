"""Scoreline for the bench: its router and workers as shipped (both in one process, or one role per process),
or ``scoreline run`` exactly as a user starts it.

Run as ``python -m streams.bench.scoreline_app BOOTSTRAP PREFIX [ROLES]``: ``router,worker`` (the
default), ``router`` or ``worker`` run those roles (the roles ``scoreline run --role`` runs) with the
bench's rules, shadowing off; stops on SIGTERM/SIGINT.

``ROLES`` = ``run`` is the path users run instead: this process writes the shipped example rules,
reply topics under ``PREFIX`` and shadow candidates kept, to a file and replaces itself with
``python -m scoreline run --bootstrap BOOTSTRAP --prefix PREFIX --rules FILE --metrics-port 0``. The
process the bench measures and stops is ``scoreline run``'s own: the router, a worker per shard,
the shadow worker, the comparator and the rollout controller, as the README starts them (only
the metrics port differs: several pipelines share the machine).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile

import orjson

from streams.bench.layout import bench_layout, bench_model, bench_rules, bench_rules_doc
from streams.services.pipeline import Pipeline, PipelineOptions
from streams.transport.settings import KafkaSettings
from workflows import ModelRegistry

__all__ = ["main", "run_as_users_do"]


async def main(bootstrap: str, prefix: str, roles: str = "router,worker") -> None:
    """Run the router and/or one worker per shard until SIGTERM or SIGINT (shadowing is off in the bench rules)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    options = PipelineOptions(roles=tuple(roles.split(",")), create_topics=False)
    async with Pipeline(KafkaSettings.from_env(bootstrap), bench_layout(prefix), bench_rules(prefix, bench_model()),
                        ModelRegistry.default(), options):
        await stop.wait()


def run_as_users_do(bootstrap: str, prefix: str) -> None:
    """Replace this process with ``scoreline run``: every role, the shipped rules under ``prefix``, shadowing on."""
    handle, rules = tempfile.mkstemp(prefix="scoreline-bench-run-", suffix=".json")
    with os.fdopen(handle, "wb") as out:
        out.write(orjson.dumps(bench_rules_doc(prefix, shadow=True)))
    os.execv(sys.executable, [sys.executable, "-m", "scoreline", "run", "--bootstrap", bootstrap, "--prefix", prefix,
                              "--rules", rules, "--metrics-port", "0"])


if __name__ == "__main__":
    if sys.argv[3:4] == ["run"]:
        run_as_users_do(*sys.argv[1:3])
    else:
        asyncio.run(main(*sys.argv[1:4]))
