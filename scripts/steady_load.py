"""Steady title-ranking traffic, as a producer service would send it: for trying rollouts and dashboards by hand.

    .venv/bin/python scripts/steady_load.py [--prefix scoreline.] [--rate 80] [--seconds 150]

Sends ``--rate`` requests a second as client ``demo`` (users spread over the bucket space),
waits for every result, then prints how many each model and rules version answered.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]

from streams.client.score_client import ScoreClient  # noqa: E402
from streams.topics import TopicLayout  # noqa: E402
from streams.transport.settings import KafkaSettings  # noqa: E402
from workflows import sample_items  # noqa: E402


async def load(bootstrap: str, prefix: str, rate: float, seconds: float) -> collections.Counter:
    items = sample_items("title-ranking", 4000, seed=3)
    answered: collections.Counter = collections.Counter()
    async with ScoreClient(KafkaSettings.from_env(bootstrap), "demo", layout=TopicLayout(prefix=prefix)) as client:
        pending = []
        began, i = time.monotonic(), 0
        while time.monotonic() - began < seconds:
            item = items[i % len(items)]
            context = dict(item.context) | {"user_id": f"u-{i}"}
            pending.append(asyncio.ensure_future(client.score("title-ranking", context, dict(item.payload),
                                                              timeout=60)))
            i += 1
            await asyncio.sleep(max(0.0, began + i / rate - time.monotonic()))
        for result in await asyncio.gather(*pending, return_exceptions=True):
            answered[(getattr(result, "model", type(result).__name__), getattr(result, "rules_version", None))] += 1
    return answered


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default=os.environ.get("SCORELINE_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--prefix", default="scoreline.")
    parser.add_argument("--rate", type=float, default=80.0, help="requests a second (default 80)")
    parser.add_argument("--seconds", type=float, default=150.0, help="how long (default 150)")
    args = parser.parse_args()
    for (model, version), n in sorted(asyncio.run(load(args.bootstrap, args.prefix, args.rate, args.seconds)).items(),
                                      key=str):
        print(f"{model}  rules v{version}: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
