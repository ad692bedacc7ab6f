"""``scoreline top``: a live view of running scoreline processes, from their metrics endpoints.

Scrapes every ``--metrics`` endpoint each ``--interval`` seconds and redraws: throughput and
p50/p99 per objective and model, error and expiry rates, routing shares per cell (watch a
canary grow), dead letters per code, lag per shard partition, the rules versions in force and,
when the comparator has written any, shadow agreement; with a cluster named, the guarded rollouts in
progress (step, samples, each guard's verdict). ``--once`` prints a single frame (two
scrapes an interval apart) and exits; ``--json`` prints that frame's figures as one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import sys
import time
import urllib.request

import orjson

from schemas.errors import ScorelineError
from scoreline import settings, top_view
from scoreline.output import emit_json, progress
from streams.ops.http import DEFAULT_METRICS_PORT
from streams.rollouts.client import RolloutClient
from streams.rollouts.records import ACTIVE
from streams.transport.settings import KafkaSettings
from streams.transport.tail import TopicTail

DEFAULT_ENDPOINT = f"http://127.0.0.1:{DEFAULT_METRICS_PORT}/metrics"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("top", help="a live view of throughput, latency, errors, lag and shadow agreement")
    settings.add_connection_arguments(parser, rules=False)
    parser.add_argument("--metrics", action="append", metavar="URL",
                        help=f"a metrics endpoint to read, URL or host:port (repeatable; default {DEFAULT_ENDPOINT})")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes (default 2)")
    parser.add_argument("--once", action="store_true", help="print one frame and exit")
    parser.add_argument("--no-shadow", action="store_true",
                        help="do not read the comparison topic (shadow agreement shows n/a)")
    parser.add_argument("--json", action="store_true", help="with --once: print the frame's figures as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_top(args))
    except KeyboardInterrupt:
        return 0


def endpoint_url(spec: str) -> str:
    """``host:port`` → ``http://host:port/metrics``; a full URL is kept."""
    if "://" in spec:
        return spec
    return f"http://{spec}/metrics"


def _fetch(url: str, timeout: float) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - operator-given URL
        return response.read().decode()


async def scrape(urls: list[str], timeout: float = 2.0) -> top_view.Scrape:
    """Every endpoint once, concurrently; endpoints that fail are named in ``errors``."""
    async def one(url: str) -> top_view.Scrape:
        at = time.monotonic()
        try:
            text = await asyncio.to_thread(_fetch, url, timeout)
        except Exception as exc:  # noqa: BLE001 - a down process is shown, not fatal
            return top_view.Scrape(at=at, samples={}, errors=(f"{url}: {exc}",))
        return top_view.parse(text, source=url, at=at)

    parts = await asyncio.gather(*(one(url) for url in urls))
    return top_view.merge(parts, at=time.monotonic())


class _Comparisons:
    """Follows the comparison topic from its beginning, if it exists and a cluster was named."""

    def __init__(self, kafka: KafkaSettings | None, topic: str) -> None:
        self.kafka = kafka
        self.topic = topic
        self.tail: TopicTail | None = None
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        if self.kafka is not None:
            self.task = asyncio.create_task(self._start(self.kafka))

    async def _start(self, kafka: KafkaSettings) -> None:
        tail = TopicTail(kafka, [self.topic], from_beginning=True)
        try:
            await tail.start()
        except Exception:  # noqa: BLE001 - no topic (no comparator yet) or no cluster: agreement is n/a
            return
        self.tail = tail

    async def ready(self, timeout: float) -> None:
        if self.task is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.task), timeout)

    def agreement(self):
        if self.tail is None or not self.tail.records:
            return None
        rows = []
        for record in self.tail.records:
            with contextlib.suppress(orjson.JSONDecodeError, TypeError):
                rows.append(orjson.loads(record.value))
        return top_view.agreement(r for r in rows if isinstance(r, dict)) or None

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task
        if self.tail is not None:
            await self.tail.stop()


async def _rollouts(kafka: KafkaSettings | None, layout) -> list[dict]:
    """The rollouts in progress on the cluster (none without one, or when it cannot be read)."""
    if kafka is None:
        return []
    try:
        log = await RolloutClient(kafka, layout, timeout=3.0).read()
    except ScorelineError:
        return []
    return [r.to_json() for r in sorted(log.current.values(), key=lambda r: r.objective) if r.state in ACTIVE]


async def _top(args: argparse.Namespace) -> int:
    urls = [endpoint_url(s) for s in (args.metrics or [DEFAULT_ENDPOINT])]
    # Only a cluster named explicitly: top must never start a local broker just to look.
    bootstrap = args.bootstrap or os.environ.get("SCORELINE_BOOTSTRAP")
    cluster = KafkaSettings.from_env(bootstrap) if bootstrap else None
    kafka = cluster if not args.no_shadow else None
    comparisons = _Comparisons(kafka, settings.layout(args).shadow_comparisons)
    comparisons.start()
    try:
        before = await scrape(urls)
        if args.once:
            await asyncio.sleep(args.interval)
            after = await scrape(urls)
            await comparisons.ready(timeout=10.0)
            view = top_view.summarise(before, after)
            shadow = comparisons.agreement()
            rollouts = await _rollouts(cluster, settings.layout(args))
            if args.json:
                emit_json(_as_json(view, shadow) | {"rollouts": rollouts})
            else:
                sys.stdout.write(top_view.render(view, shadow, rollouts=rollouts))
            return 0 if len(after.errors) < len(urls) else 1
        clear = "\x1b[H\x1b[2J" if sys.stdout.isatty() else "\n"
        progress(f"scoreline top: reading {', '.join(urls)} every {args.interval}s; Ctrl-C stops")
        while True:
            await asyncio.sleep(args.interval)
            after = await scrape(urls)
            frame = top_view.render(top_view.summarise(before, after), comparisons.agreement(),
                                    rollouts=await _rollouts(cluster, settings.layout(args)))
            sys.stdout.write(clear + frame)
            sys.stdout.flush()
            before = after
    finally:
        await comparisons.stop()


def _as_json(view: top_view.View, shadow) -> dict:
    out = dataclasses.asdict(view)
    out["lag"] = {topic: {str(p): v for p, v in parts.items()} for topic, parts in view.lag.items()}
    out["rules_versions"] = {str(v): n for v, n in view.rules_versions.items()}
    out["routed"] = [dict(zip(("objective", "model", "cell", "traffic", "share", "rps"), row)) for row in view.routed]
    out["dead_letters"] = {code: {"total": t, "rps": r} for code, (t, r) in view.dead_letters.items()}
    out["shadow"] = None if shadow is None else [
        {"objective": o, "primary_model": p, "shadow_model": s, **row} for (o, p, s), row in shadow.items()]
    return out
