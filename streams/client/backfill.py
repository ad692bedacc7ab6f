"""Backfills and replays: bulk requests published as ``traffic: backfill``, results collected.

A **backfill** reads a JSON Lines file of requests, gives every line a stable request id
(``bf-<sha1 of the file>[:10]-<line>``, unless the line names its own), publishes them on the
backfill request topic at a limited rate, and writes one output line per input line (the
result plus ``"line"``) as results arrive. Because ids are stable, a restarted backfill
(``resume``) republishes only the lines without output and drops repeated results.

A **replay** republishes the requests a topic holds between two timestamps as backfill
traffic, to their original ``reply_to``.

This module runs a backfill; its pieces live beside it: input and output lines in
:mod:`streams.client.backfill_lines`, the rate limit in :mod:`streams.client.rate`, the progress bar in
:mod:`streams.client.progress`, and replays in :mod:`streams.client.replay`. Their names are re-exported
here, where the commands and tests have always found them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from schemas.errors import ErrorCode, InvalidMessage
from schemas.messages import Result, Status
from streams.client.backfill_lines import (
    Line,
    file_digest,
    output_line,
    prepare_lines,
    read_done_lines,
    rejected_result,
)
from streams.client.progress import Progress
from streams.client.rate import TokenBucket, parse_rate
from streams.client.replay import ReplayFailed, parse_time, replay
from streams.client.score_client import ScoreClient
from streams.topics import TopicLayout
from streams.transport.admin import router_running
from streams.transport.settings import KafkaSettings

__all__ = ["BackfillOptions", "Line", "Progress", "ReplayFailed", "TokenBucket", "backfill", "check_options",
           "parse_rate", "parse_time", "prepare_lines", "read_done_lines", "replay", "router_running"]

MAX_REPLY_TOPICS = 16
"""The most distinct ``reply_to`` topics one backfill file may name (each is read while it runs)."""


@dataclass
class BackfillOptions:
    """What to backfill and how."""

    path: Path
    "The JSON Lines file of requests."
    objective: str
    "The objective of every line (filled in where a line names none)."
    client: str = "demo"
    "The client of lines that name none."
    rate: float | None = None
    "Requests published per second at most; None for no limit."
    out: Path | None = None
    "Where output lines go (appended)."
    resume: bool = False
    "Publish only the lines that have no output in ``out`` yet."
    window: int = 1000
    """Requests in flight at most. It bounds how much backfill work queues ahead of live work in
    the router and the workers (and so the latency live traffic pays), memory, and what a resume
    republishes."""
    idle_timeout: float = 60.0
    "After publishing, give up waiting once no result arrived for this many seconds."
    reply_partition: int | None = None
    "The reply partition the backfill reads (default: as ``ScoreClient`` chooses)."
    malformed_listed: int = 100
    "How many malformed line numbers the summary lists."


@dataclass
class _Collector:
    """Matches results to lines, writes each line's output once, counts the rest."""

    ids: dict[str, int]
    write: Callable[[bytes], object]
    done: set[int]
    pending: set[int] = field(default_factory=set)
    statuses: Counter = field(default_factory=Counter)
    duplicates: int = 0
    last_result_at: float = field(default_factory=time.monotonic)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def accept(self, result: Result) -> None:
        number = self.ids.get(result.request_id)
        if number is None:
            return  # another client's result on a shared reply partition
        if number in self.done:
            self.duplicates += 1  # a replayed or re-published request answered twice
            return
        self.done.add(number)
        self.pending.discard(number)
        self.write(output_line(number, result))
        self.statuses[result.status] += 1
        self.last_result_at = time.monotonic()
        self.changed.set()


def check_options(options: BackfillOptions) -> None:
    """Refuse what cannot work before anything connects.

    Raises:
        InvalidMessage: naming the option at fault (``file``, ``out``, ``window``).
    """
    if not options.path.is_file():
        raise InvalidMessage(ErrorCode.INVALID_VALUE, f"no such file: {options.path}", field="file")
    if options.resume and options.out is None:
        raise InvalidMessage(ErrorCode.MISSING_FIELD, "--resume needs --out (the results written so far)",
                             field="out")
    if options.out is not None and not options.resume and options.out.exists() and options.out.stat().st_size:
        raise InvalidMessage(ErrorCode.INVALID_VALUE,
                             f"{options.out} already holds output; pass --resume to continue it, or remove it",
                             field="out")
    if options.window < 1:
        raise InvalidMessage(ErrorCode.INVALID_VALUE, f"window must be at least 1, got {options.window}",
                             field="window")


async def backfill(kafka: KafkaSettings, layout: TopicLayout, options: BackfillOptions,
                   progress: Callable[[str], None] = lambda _: None, *, tty: bool = False) -> dict:
    """Publish a file of requests as backfill traffic and collect one output per line.

    Returns the summary ``{"lines", "published", "results": {"ok", "error", "expired"},
    "duplicates_dropped", "seconds", "malformed", "skipped", "unanswered", ...}``.
    """
    began = time.monotonic()
    check_options(options)
    path = options.path
    digest = file_digest(path)
    done = read_done_lines(options.out) if options.resume and options.out is not None else set()

    # First pass: every line's id (to recognise results and duplicates) and the reply topics to read.
    ids: dict[str, int] = {}
    reply_topics: set[str] = set()
    lines = malformed_count = to_publish = 0
    for line in _lines(path, digest, options, layout):
        lines += 1
        ids[line.request_id] = line.number
        if line.request is None:
            malformed_count += 1
            continue
        reply_topics.add(line.request.reply_to)
        to_publish += line.number not in done
    if len(reply_topics) > MAX_REPLY_TOPICS:
        raise InvalidMessage(ErrorCode.INVALID_VALUE,
                             f"the file names {len(reply_topics)} reply_to topics; a backfill reads at most "
                             f"{MAX_REPLY_TOPICS}", field="reply_to")

    skipped = len(done)
    out_file = options.out.open("ab", buffering=0) if options.out is not None else None
    collector = _Collector(ids, out_file.write if out_file else (lambda _: None), done)
    malformed_lines: list[int] = []
    published = send_failures = 0
    stalled = False
    bar = Progress(to_publish, progress, tty=tty)
    bucket = TokenBucket(options.rate) if options.rate else None
    say = (lambda text: progress(f"\r{text}\x1b[K\n")) if tty else (lambda text: progress(text + "\n"))
    try:
        async with contextlib.AsyncExitStack() as stack:
            clients: dict[str, ScoreClient] = {}
            for topic in sorted(reply_topics):
                clients[topic] = await stack.enter_async_context(ScoreClient(
                    kafka, options.client, reply_to=topic, layout=layout, reply_partition=options.reply_partition,
                    on_reply=collector.accept))
            collector.last_result_at = time.monotonic()
            for line in _lines(path, digest, options, layout):
                if line.number in done:
                    continue
                if line.request is None:
                    assert line.error is not None  # a line without a request carries why
                    malformed_lines.append(line.number)
                    say(f"line {line.number}: {line.error.code}: {line.error.message}")
                    collector.done.add(line.number)
                    collector.write(output_line(line.number, rejected_result(line, options.objective)))
                    continue
                if len(collector.pending) >= options.window:
                    if not await _wait_below(collector, options.window, options.idle_timeout):
                        stalled = True
                        say(f"no result for {options.idle_timeout:g}s with {len(collector.pending)} in flight; "
                            f"stopping (run again with --resume)")
                        break
                if bucket is not None:
                    await bucket.acquire()
                collector.pending.add(line.number)
                await clients[line.request.reply_to].submit_request(line.request)
                published += 1
                bar.update(sum(collector.statuses.values()), published)
            if not stalled:
                await _wait_below(collector, 1, options.idle_timeout,
                                  tick=lambda: bar.update(sum(collector.statuses.values()), published))
            bar.finish(sum(collector.statuses.values()), published)
            send_failures = sum(c.send_failures for c in clients.values())
    finally:
        if out_file is not None:
            out_file.close()
    return {
        "lines": lines,
        "published": published,
        "results": {s: collector.statuses.get(s, 0) for s in (Status.OK, Status.ERROR, Status.EXPIRED)},
        "duplicates_dropped": collector.duplicates,
        "seconds": round(time.monotonic() - began, 3),
        "malformed": {"count": malformed_count, "lines": malformed_lines[:options.malformed_listed]},
        "skipped": skipped,
        "unanswered": len(collector.pending),
        "unanswered_lines": sorted(collector.pending)[:options.malformed_listed],
        "send_failures": send_failures,
        "request_id_prefix": f"bf-{digest}-",
        "out": str(options.out) if options.out else None,
    }


async def _wait_below(collector: _Collector, limit: int, idle_timeout: float,
                      tick: Callable[[], None] = lambda: None) -> bool:
    """Wait until fewer than ``limit`` lines are in flight; False once results stopped for ``idle_timeout``."""
    while len(collector.pending) >= limit:
        if time.monotonic() - collector.last_result_at >= idle_timeout:
            return False
        collector.changed.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(collector.changed.wait(), 0.5)
        tick()
    return True


def _lines(path: Path, digest: str, options: BackfillOptions, layout: TopicLayout) -> Iterator[Line]:
    with path.open("rb") as f:
        yield from prepare_lines(f, digest=digest, objective=options.objective, client=options.client,
                                 layout=layout)
