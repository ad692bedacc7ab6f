"""Scoreline's own router and workers, as shipped, for the bench: both in one process, or one role per process.

Run as ``python -m streams.bench.scoreline_app BOOTSTRAP PREFIX [ROLES]`` (``router,worker``, the
default, or ``router`` or ``worker``: the roles ``scoreline run --role`` runs); stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from streams.bench.layout import bench_layout, bench_model, bench_rules
from streams.services.pipeline import Pipeline, PipelineOptions
from streams.transport.settings import KafkaSettings
from workflows import ModelRegistry

__all__ = ["main"]


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


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
