"""Backfills and replays: bulk requests published as ``traffic: backfill``, results collected.

A **backfill** reads requests from a file or a directory of files (JSON Lines, Parquet or CSV),
gives every row a stable request id (``bf-<sha1 of the input>[:10]-<row>``, unless the row
names its own), publishes them on the backfill request topic, and writes one result per row
(JSON Lines, or Parquet for an ``--out`` ending in ``.parquet``) as results arrive. Because ids
are stable, a restarted backfill (``resume``) republishes only the rows without a result and
drops repeated results.

How fast it publishes: at most ``rate`` requests a second if one is given; within at most
``window`` requests in flight; and, unless ``govern`` is off, within the window the
:class:`~streams.client.governor.Governor` allows, which shrinks while live traffic's latency
rises (docs/clients.md states the rule).

Memory stays flat in the number of rows: the input is read twice, a batch at a time (once to
count its rows and note their ids, once to publish them), and what is kept per row is a 64-bit
hash of its id (:class:`~streams.client.backfill_lines.RequestIds`) and a bit of "done".

A **replay** republishes the requests a topic holds between two timestamps as backfill
traffic, to their original ``reply_to``.

This module runs a backfill; its pieces live beside it: input rows in
:mod:`streams.client.backfill_tables` and :mod:`streams.client.backfill_lines`, outputs in
:mod:`streams.client.backfill_results`, the rate limit in :mod:`streams.client.rate`, the live-aware window
in :mod:`streams.client.governor`, the progress bar in :mod:`streams.client.progress`, and replays in
:mod:`streams.client.replay`. Their names are re-exported here, where the commands and tests have always
found them.
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
    RequestIds,
    prepare_lines,
    prepare_rows,
    read_done_lines,
    rejected_result,
)
from streams.client.backfill_results import DoneRows, ResultsOut, results_out
from streams.client.backfill_tables import Columns, input_files, input_format, read_rows, source_digest
from streams.client.governor import Governor, LiveSignal
from streams.client.progress import Progress
from streams.client.rate import TokenBucket, parse_rate
from streams.client.replay import ReplayFailed, parse_time, replay
from streams.client.score_client import ScoreClient
from streams.topics import TopicLayout
from streams.transport.admin import router_running
from streams.transport.settings import KafkaSettings

__all__ = ["BackfillOptions", "Columns", "Line", "Progress", "ReplayFailed", "TokenBucket", "backfill",
           "check_options", "parse_rate", "parse_time", "prepare_lines", "read_done_lines", "replay",
           "router_running"]

MAX_REPLY_TOPICS = 16
"""The most distinct ``reply_to`` topics one backfill file may name (each is read while it runs)."""


@dataclass
class BackfillOptions:
    """What to backfill and how."""

    path: Path
    "The input: a file, or a directory of files of one format."
    objective: str
    "The objective of every row (filled in where a row names none)."
    client: str = "demo"
    "The client of rows that name none."
    rate: float | None = None
    "Requests published per second at most; None for no limit."
    out: Path | None = None
    "Where results go: Parquet if it ends in ``.parquet``, else JSON Lines (appended)."
    resume: bool = False
    "Publish only the rows that have no result in ``out`` yet."
    window: int = 1000
    """Requests in flight at most. It bounds how much backfill work queues ahead of live work in
    the router and the workers (and so the latency live traffic pays), memory, and what a resume
    republishes."""
    idle_timeout: float = 60.0
    "After publishing, give up waiting once no result arrived for this many seconds."
    reply_partition: int | None = None
    "The reply partition the backfill reads (default: as ``ScoreClient`` chooses)."
    malformed_listed: int = 100
    "How many malformed row numbers the summary lists."
    format: str | None = None
    "``jsonl``, ``parquet`` or ``csv``; None: from the extension."
    columns: Columns = field(default_factory=Columns)
    "How a table's columns make a request."
    govern: bool = True
    "Let live traffic's latency shrink the window (when a live signal is given)."


@dataclass
class _Collector:
    """Matches results to rows, writes each row's result once, counts the rest."""

    ids: RequestIds
    out: ResultsOut | None
    done: DoneRows
    pending: set[int] = field(default_factory=set)
    statuses: Counter = field(default_factory=Counter)
    duplicates: int = 0
    last_result_at: float = field(default_factory=time.monotonic)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def accept(self, result: Result) -> None:
        number = self.ids.row_of(result.request_id)
        if number is None:
            return  # another client's result on a shared reply partition
        if number in self.done:
            self.duplicates += 1  # a replayed or re-published request answered twice
            return
        self.record(number, result)
        self.pending.discard(number)
        self.statuses[result.status] += 1
        self.last_result_at = time.monotonic()
        self.changed.set()

    def record(self, number: int, result: Result) -> None:
        self.done.add(number)
        if self.out is not None:
            self.out.add(number, result)


def check_options(options: BackfillOptions) -> None:
    """Refuse what cannot work before anything connects.

    Raises:
        InvalidMessage: naming the option at fault (``file``, ``format``, ``out``, ``window``).
    """
    if not options.path.exists():
        raise InvalidMessage(ErrorCode.INVALID_VALUE, f"no such file or directory: {options.path}", field="file")
    input_files(options.path, input_format(options.path, options.format))
    if options.resume and options.out is None:
        raise InvalidMessage(ErrorCode.MISSING_FIELD, "--resume needs --out (the results written so far)",
                             field="out")
    if options.out is not None and not options.resume and _holds_output(options.out):
        raise InvalidMessage(ErrorCode.INVALID_VALUE,
                             f"{options.out} already holds output; pass --resume to continue it, or remove it",
                             field="out")
    if options.window < 1:
        raise InvalidMessage(ErrorCode.INVALID_VALUE, f"window must be at least 1, got {options.window}",
                             field="window")


def _holds_output(out: Path) -> bool:
    parts = out.with_name(out.name + ".parts")
    return (out.exists() and out.stat().st_size > 0) or (parts.is_dir() and any(parts.iterdir()))


@dataclass
class _Scan:
    """What the first pass over the input found."""

    rows: int = 0
    malformed: int = 0
    to_publish: int = 0
    reply_topics: set[str] = field(default_factory=set)


async def backfill(kafka: KafkaSettings, layout: TopicLayout, options: BackfillOptions,
                   progress: Callable[[str], None] = lambda _: None, *, tty: bool = False,
                   live: LiveSignal | None = None, quiet: bool = False) -> dict:
    """Publish an input of requests as backfill traffic and collect one result per row.

    ``progress`` gets the bar (unless ``quiet``) and each rejected row's reason; ``live``, when
    given, is what the governor watches.

    Returns the summary ``{"lines", "published", "results": {"ok", "error", "expired"},
    "duplicates_dropped", "seconds", "malformed", "skipped", "unanswered", "window", ...}``.

    Raises:
        InvalidMessage: the input cannot be read (nothing was published), or names too many reply topics.
    """
    began = time.monotonic()
    check_options(options)
    fmt = input_format(options.path, options.format)
    files = input_files(options.path, fmt)
    digest = source_digest(files, options.path)
    out = results_out(options.out) if options.out is not None else None
    done = out.done_rows() if options.resume and out is not None else DoneRows()
    skipped = len(done)

    def rows(ids: RequestIds) -> Iterator[Line]:
        return prepare_rows(read_rows(files, fmt, options.columns), digest=digest, objective=options.objective,
                            client=options.client, layout=layout, ids=ids)

    # First pass: every row's id (to recognise results and duplicates) and the reply topics to read;
    # a file that cannot be read fails here, before anything is published. Ids used twice are found
    # when ``ids`` is frozen (the unfrozen ``ids`` keeps prepare_rows from holding a dict of every id).
    ids, scan, rejected = RequestIds(), _Scan(), DoneRows()
    for line in rows(ids):
        scan.rows += 1
        ids.add(line.request_id, line.number)
        if line.request is None:
            scan.malformed += 1
            rejected.add(line.number)
            continue
        scan.reply_topics.add(line.request.reply_to)
        scan.to_publish += line.number not in done
    ids.freeze()
    for number in ids.repeated_rows():
        if number not in rejected:
            scan.malformed += 1
            scan.to_publish -= number not in done
    if len(scan.reply_topics) > MAX_REPLY_TOPICS:
        raise InvalidMessage(ErrorCode.INVALID_VALUE,
                             f"the input names {len(scan.reply_topics)} reply_to topics; a backfill reads at most "
                             f"{MAX_REPLY_TOPICS}", field="reply_to")

    collector = _Collector(ids, out, done)
    malformed_rows: list[int] = []
    published = send_failures = 0
    stalled = False
    bar = Progress(scan.to_publish, (lambda _: None) if quiet else progress, tty=tty)
    bucket = TokenBucket(options.rate) if options.rate else None
    say = (lambda text: progress(f"\r{text}\x1b[K\n")) if tty and not quiet else (lambda text: progress(text + "\n"))
    governor = None
    if options.govern and live is not None and options.rate is None:
        if await live.live_buckets() is None:
            say(f"no live latency to watch (no metrics endpoint answered): the window stays at {options.window}; "
                f"pass --metrics URL for each worker, or --rate")
        else:
            governor = Governor(options.window)
    unit = "line" if fmt == "jsonl" else "row"
    answered = lambda: sum(collector.statuses.values())  # noqa: E731 - read at each update
    try:
        async with contextlib.AsyncExitStack() as stack:
            clients: dict[str, ScoreClient] = {}
            for topic in sorted(scan.reply_topics):
                clients[topic] = await stack.enter_async_context(ScoreClient(
                    kafka, options.client, reply_to=topic, layout=layout, reply_partition=options.reply_partition,
                    on_reply=collector.accept))
            if governor is not None and live is not None:
                await stack.enter_async_context(governor.watching(live))
            collector.last_result_at = time.monotonic()
            for line in rows(ids):
                if line.number in done:
                    continue
                if line.request is None:
                    assert line.error is not None  # a row without a request carries why
                    malformed_rows.append(line.number)
                    say(f"{unit} {line.number}: {line.error.code}: {line.error.message}")
                    collector.record(line.number, rejected_result(line, options.objective))
                    continue
                limit = governor.window if governor is not None else options.window
                if len(collector.pending) >= limit:
                    if not await _wait_below(collector, lambda: governor.window if governor else options.window,
                                             options.idle_timeout):
                        stalled = True
                        say(f"no result for {options.idle_timeout:g}s with {len(collector.pending)} in flight; "
                            f"stopping (run again with --resume)")
                        break
                if bucket is not None:
                    await bucket.acquire()
                collector.pending.add(line.number)
                await clients[line.request.reply_to].submit_request(line.request)
                published += 1
                bar.update(answered(), published)
            if not stalled:
                await _wait_below(collector, lambda: 1, options.idle_timeout,
                                  tick=lambda: bar.update(answered(), published))
            bar.finish(answered(), published)
            send_failures = sum(c.send_failures for c in clients.values())
    finally:
        if out is not None:
            out.close()
    return {
        "lines": scan.rows,
        "published": published,
        "results": {s: collector.statuses.get(s, 0) for s in (Status.OK, Status.ERROR, Status.EXPIRED)},
        "duplicates_dropped": collector.duplicates,
        "seconds": round(time.monotonic() - began, 3),
        "malformed": {"count": scan.malformed, "lines": malformed_rows[:options.malformed_listed]},
        "skipped": skipped,
        "unanswered": len(collector.pending),
        "unanswered_lines": sorted(collector.pending)[:options.malformed_listed],
        "send_failures": send_failures,
        "request_id_prefix": f"bf-{digest}-",
        "format": fmt,
        "out": str(options.out) if options.out else None,
        "window": governor.summary() if governor is not None else {"governed": False, "max": options.window},
    }


async def _wait_below(collector: _Collector, limit: Callable[[], int], idle_timeout: float,
                      tick: Callable[[], None] = lambda: None) -> bool:
    """Wait until fewer than ``limit()`` rows are in flight; False once results stopped for ``idle_timeout``."""
    while len(collector.pending) >= limit():
        if time.monotonic() - collector.last_result_at >= idle_timeout:
            return False
        collector.changed.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(collector.changed.wait(), 0.5)
        tick()
    return True
