"""Backfills and replays: bulk requests published as ``traffic: backfill``, results collected.

A **backfill** reads a JSON Lines file of requests, gives every line a stable request id
(``bf-<sha1 of the file>[:10]-<line>``, unless the line names its own), publishes them on the
backfill request topic at a limited rate, and writes one output line per input line (the
result plus ``"line"``) as results arrive. Because ids are stable, a restarted backfill
(``resume``) republishes only the lines without output and drops repeated results.

A **replay** republishes the requests a topic holds between two timestamps as backfill
traffic, to their original ``reply_to``.

Pure pieces (rate parsing, the token bucket, time parsing, progress lines, line preparation)
come first; the Kafka parts follow.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import time
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import orjson
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from schemas import codec, headers as H
from schemas.errors import ErrorCode, InvalidMessage, ScorelineError
from schemas.messages import ErrorInfo, Request, Result, Status, Traffic
from streams.client import ScoreClient, request_record
from streams.kafka import KafkaSettings, headers_of
from streams.topics import TopicLayout

__all__ = ["BackfillOptions", "Line", "Progress", "ReplayFailed", "TokenBucket", "backfill", "check_options",
           "parse_rate", "parse_time", "prepare_lines", "read_done_lines", "replay", "router_running"]

log = logging.getLogger(__name__)

MAX_REPLY_TOPICS = 16
"""The most distinct ``reply_to`` topics one backfill file may name (each is read while it runs)."""


# --- rate limiting ---------------------------------------------------------------

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*(s|sec|m|min|h|hour))?\s*$")
_PER = {None: 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0}


def parse_rate(text: str | None) -> float | None:
    """Requests per second from ``500``, ``500/s``, ``3000/m`` or ``10000/h``; None for no limit.

    Raises:
        InvalidMessage: ``invalid_value`` naming ``rate``.
    """
    if text is None or text.strip().lower() in ("", "none", "unlimited"):
        return None
    match = _RATE.match(text.lower())
    if not match or float(match.group(1)) <= 0:
        raise InvalidMessage(ErrorCode.INVALID_VALUE,
                             f"rate must look like 500/s, 3000/m or 10000/h (a positive number), got {text!r}",
                             field="rate")
    return float(match.group(1)) / _PER[match.group(2)]


class TokenBucket:
    """Allows ``rate`` events per second on average, with bursts of at most ``burst``.

    ``clock`` is injectable so the arithmetic is tested without sleeping.
    """

    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        # A tenth of a second's worth by default: smooth enough, yet the producer still batches.
        self.burst = burst if burst is not None else max(1.0, rate / 10)
        self.clock = clock
        self.tokens = self.burst
        self.updated = clock()

    def delay(self, n: float = 1.0) -> float:
        """Take ``n`` tokens; return how long to wait before using them (0 when they were there)."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    async def acquire(self, n: float = 1.0) -> None:
        """Wait until ``n`` tokens are available, and take them."""
        wait = self.delay(n)
        if wait > 0:
            await asyncio.sleep(wait)


# --- time ranges -----------------------------------------------------------------

_RELATIVE = re.compile(r"^-?(\d+(?:\.\d+)?)(s|m|h|d)$")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_time(text: str, now_ms: int, *, name: str = "since") -> int:
    """Epoch milliseconds from ``now``, a duration ago (``15m``, ``-2h``, ``1d``), epoch ms or
    seconds, or an ISO 8601 time (UTC unless it names a zone).

    Raises:
        InvalidMessage: ``invalid_value`` naming the option.
    """
    text = text.strip()
    if text.lower() == "now":
        return now_ms
    if match := _RELATIVE.match(text.lower()):
        return now_ms - int(float(match.group(1)) * _UNIT_MS[match.group(2)])
    if text.isdigit():
        value = int(text)
        return value if value >= 10**11 else value * 1000  # 10^11 ms is 1973: smaller means seconds
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidMessage(ErrorCode.INVALID_VALUE,
                             f"{name} must be an ISO 8601 time, epoch milliseconds, 'now' or a duration ago "
                             f"such as 15m, got {text!r}", field=name) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


# --- progress --------------------------------------------------------------------


class Progress:
    """A progress bar with rate and ETA on a terminal; a plain line every few seconds otherwise.

    ``write`` gets raw text: bar redraws start with a carriage return, plain lines end with a newline.
    """

    def __init__(self, total: int, write: Callable[[str], None], *, tty: bool, every: float = 2.0,
                 clock: Callable[[], float] = time.monotonic, label: str = "backfill") -> None:
        self.total = total
        self.write = write
        self.tty = tty
        self.every = every if not tty else 0.2
        self.clock = clock
        self.label = label
        self.began = clock()
        self._last = float("-inf")
        self._samples: deque[tuple[float, int]] = deque()

    def update(self, done: int, published: int, *, force: bool = False) -> None:
        """Report ``done`` of ``total`` (throttled unless ``force``)."""
        now = self.clock()
        if not force and now - self._last < self.every:
            return
        self._last = now
        self._samples.append((now, done))
        self.write(self.line(done, published, now))

    def rate(self, now: float) -> float:
        """Results per second over the last ten seconds (over the whole run until there is enough)."""
        while len(self._samples) > 2 and now - self._samples[0][0] > 10.0:
            self._samples.popleft()
        if not self._samples:
            return 0.0
        (t0, d0), (t1, d1) = self._samples[0], self._samples[-1]
        if t1 - t0 < 0.5:
            t0, d0 = self.began, 0
        return (d1 - d0) / (t1 - t0) if t1 > t0 else 0.0

    def line(self, done: int, published: int, now: float) -> str:
        """One progress line (with a carriage return and a bar on a terminal)."""
        rate = self.rate(now)
        left = self.total - done
        eta = _clock_text(left / rate) if rate > 0 and left > 0 else ("0:00" if left <= 0 else "?")
        share = done / self.total if self.total else 1.0
        text = (f"{self.label} {done:,}/{self.total:,} {share:4.0%}  {rate:,.0f}/s  ETA {eta}  "
                f"(published {published:,})")
        if not self.tty:
            return text + "\n"
        width = 24
        filled = int(share * width)
        return f"\r[{'#' * filled}{'-' * (width - filled)}] {text}\x1b[K"

    def finish(self, done: int, published: int) -> None:
        """The final line (ends the bar's line on a terminal)."""
        self.update(done, published, force=True)
        if self.tty:
            self.write("\n")


def _clock_text(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


# --- input lines -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Line:
    """One input line, ready to publish or already rejected."""

    number: int
    "1-based line number in the file."
    request_id: str
    "The request id it is published under (stable across runs of the same file)."
    request: Request | None
    "The request, or None when the line was rejected."
    error: ErrorInfo | None = None
    "Why the line was rejected (its output line carries this as an error result)."


def file_digest(path: Path) -> str:
    """The first ten hex digits of the file's SHA-1: the stable part of its request ids."""
    digest = hashlib.sha1()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:10]


def prepare_lines(raw_lines: Iterator[bytes], *, digest: str, objective: str, client: str,
                  layout: TopicLayout) -> Iterator[Line]:
    """Turn raw JSON Lines into requests: ids, client, ``reply_to`` and objective filled in,
    ``traffic`` forced to backfill. Blank lines are skipped (they hold no request) but keep
    their number, so line numbers always match the file.
    """
    seen: dict[str, int] = {}
    for number, raw in enumerate(raw_lines, start=1):
        if not raw.strip():
            continue
        derived = f"bf-{digest}-{number}"
        try:
            request = _request_of(raw, derived, objective, client, layout)
            if (first := seen.setdefault(request.request_id, number)) != number:
                raise InvalidMessage(ErrorCode.INVALID_VALUE,
                                     f"request_id {request.request_id!r} is already used by line {first}",
                                     field="request_id")
        except InvalidMessage as exc:
            yield Line(number, derived, None, exc.to_error_info())
            continue
        yield Line(number, request.request_id, request)


def _request_of(raw: bytes, derived_id: str, objective: str, client: str, layout: TopicLayout) -> Request:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidMessage(ErrorCode.MALFORMED_JSON, f"line is not valid JSON: {exc}") from None
    if type(body) is not dict:
        raise InvalidMessage(ErrorCode.NOT_AN_OBJECT, "line must hold a JSON object (one request)")
    if body.get("objective") is None:
        body["objective"] = objective
    elif body["objective"] != objective:
        raise InvalidMessage(ErrorCode.INVALID_VALUE,
                             f"objective is {body['objective']!r} but this backfill is for {objective!r}",
                             field="objective")
    if body.get("request_id") is None:
        body["request_id"] = derived_id
    if body.get("client") is None:
        body["client"] = client
    if body.get("reply_to") is None and type(body["client"]) is str:
        body["reply_to"] = layout.replies(body["client"])
    body["traffic"] = Traffic.BACKFILL
    return codec.request_from_dict(body)


def rejected_result(line: Line, objective: str) -> Result:
    """The output for a line that was never published: an error result naming the fault."""
    return Result(request_id=line.request_id, objective=objective, status=Status.ERROR, error=line.error,
                  traffic=Traffic.BACKFILL)


def output_line(number: int, result: Result) -> bytes:
    """One line of the ``--out`` file: ``line`` first, then the result message."""
    return orjson.dumps({"line": number, **orjson.loads(codec.encode(result))}) + b"\n"


def read_done_lines(out: Path) -> set[int]:
    """The line numbers that already have output in ``out``.

    A last line cut short by a crash is removed from the file (its input line is then
    published again); any other unreadable line means ``out`` is not a backfill output.

    Raises:
        InvalidMessage: ``invalid_value`` naming ``out``.
    """
    if not out.exists():
        return set()
    data = out.read_bytes()
    complete = data.rfind(b"\n") + 1
    if complete < len(data):
        with out.open("r+b") as f:
            f.truncate(complete)
    done: set[int] = set()
    for index, raw in enumerate(data[:complete].splitlines(), start=1):
        try:
            number = orjson.loads(raw)["line"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise InvalidMessage(ErrorCode.INVALID_VALUE,
                                 f"{out} line {index} is not a backfill output line; refusing to resume into it",
                                 field="out") from None
        done.add(number)
    return done


# --- the backfill ----------------------------------------------------------------


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
    write: Callable[[bytes], None]
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
    done = read_done_lines(options.out) if options.resume else set()

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


# --- replay ----------------------------------------------------------------------


async def replay(kafka: KafkaSettings, layout: TopicLayout, topic: str, since_ms: int, until_ms: int | None, *,
                 objective: str | None = None, new_ids: bool = False, rate: float | None = None,
                 progress: Callable[[str], None] = lambda _: None) -> dict:
    """Republish the requests ``topic`` holds from ``since_ms`` up to (not including) ``until_ms``.

    The range is by record timestamp, per partition: from the first offset whose timestamp is
    at or after ``since_ms`` to the first at or after ``until_ms`` (or the end as of the start
    of the replay), keeping only records whose own timestamp is in the range (producer-set
    timestamps may be out of order). Each request is rewritten as backfill traffic without its deadline (the
    original caller's deadline has long passed) and sent to its original ``reply_to``. Ids are
    kept unless ``new_ids``, which derives ``rp-<sha1(topic/partition/offset)[:16]>`` (stable,
    so replaying the same range twice still yields the same ids).
    """
    began = time.monotonic()
    if until_ms is not None and until_ms <= since_ms:
        raise InvalidMessage(ErrorCode.INVALID_VALUE, "--until must be later than --since", field="until")
    partitions = await _topic_partitions(kafka, topic)
    consumer = kafka.consumer(group_id=None, role="replay", fetch_max_wait_ms=50)
    producer = kafka.producer("replay")
    await consumer.start()
    await producer.start()
    counts: Counter = Counter()
    bucket = TokenBucket(rate) if rate else None
    try:
        ranges = await _offset_ranges(consumer, partitions, since_ms, until_ms)
        todo = {tp: rng for tp, rng in ranges.items() if rng[0] < rng[1]}
        total = sum(end - start for start, end in todo.values())
        progress(f"replaying {total:,} records of {topic} ({len(todo)} partitions with records in range)")
        if todo:
            consumer.assign(list(todo))
            for tp, (start, _) in todo.items():
                consumer.seek(tp, start)
        acks = []
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=500)
            for tp, records in batch.items():
                end = todo.get(tp, (0, -1))[1]
                for record in records:
                    if record.offset >= end:
                        break
                    counts["scanned"] += 1
                    if record.timestamp < since_ms or (until_ms is not None and record.timestamp >= until_ms):
                        counts["out_of_range"] += 1  # a timestamp out of order with its offset
                        continue
                    out = _replayed(record, objective, new_ids, counts)
                    if out is None:
                        continue
                    if bucket is not None:
                        await bucket.acquire()
                    acks.append(await producer.send(layout.requests_backfill, out[0], key=out[1], headers=out[2]))
                    counts["published"] += 1
            for tp in list(todo):
                if await consumer.position(tp) >= todo[tp][1]:
                    del todo[tp]
        failures = [r for r in await asyncio.gather(*acks, return_exceptions=True) if isinstance(r, BaseException)]
    finally:
        await consumer.stop()
        await producer.stop()
    if failures:
        raise ReplayFailed(f"{len(failures)} of {counts['published']} replayed requests were refused: "
                           f"{failures[0]!r}")
    return {
        "topic": topic,
        "since_ms": since_ms,
        "until_ms": until_ms,
        "scanned": counts["scanned"],
        "published": counts["published"],
        "skipped": {"other_objective": counts["other_objective"], "undecodable": counts["undecodable"],
                    "out_of_range": counts["out_of_range"]},
        "partitions": {str(tp.partition): list(rng) for tp, rng in sorted(ranges.items())},
        "new_ids": new_ids,
        "seconds": round(time.monotonic() - began, 3),
    }


class ReplayFailed(ScorelineError):
    """The broker refused some replayed requests; the replay can be run again (ids are stable)."""

    code = "replay_failed"
    retriable = True


def _replayed(record, objective: str | None, new_ids: bool,
              counts: Counter) -> tuple[bytes, bytes | None, list] | None:
    """The ``(value, key, headers)`` that replay one historical request, or None to skip it."""
    try:
        request = codec.decode_request(record.value or b"", max_bytes=1 << 62)
    except InvalidMessage:
        counts["undecodable"] += 1  # it was dead-lettered the first time; replaying cannot help
        return None
    if objective is not None and request.objective != objective:
        counts["other_objective"] += 1
        return None
    request_id = request.request_id
    if new_ids:
        where = f"{record.topic}/{record.partition}/{record.offset}".encode()
        request_id = f"rp-{hashlib.sha1(where).hexdigest()[:16]}"
    request = replace(request, request_id=request_id, traffic=Traffic.BACKFILL, deadline_ms=None)
    original = headers_of(record.headers)
    shard_key = original.get(H.SHARD_KEY)
    if shard_key is None:
        # The original came from a plain producer: publish it plainly too, so the router reads
        # the shard key from the body instead of routing a header-only request without one.
        return codec.encode_request(request), record.key, [(H.TRAFFIC, Traffic.BACKFILL.encode())]
    # The reply partition is dropped on purpose: the instance that asked is likely gone.
    _, value, key, headers = request_record(TopicLayout(), request, shard_key=shard_key, reply_partition=None)
    return value, key, headers


async def _topic_partitions(kafka: KafkaSettings, topic: str) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap, **kafka.security)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if described["error_code"] or not described["partitions"]:
        raise InvalidMessage(ErrorCode.INVALID_VALUE, f"topic {topic} does not exist", field="from_topic")
    return [TopicPartition(topic, p["partition"]) for p in described["partitions"]]


async def _offset_ranges(consumer, partitions: list[TopicPartition], since_ms: int,
                         until_ms: int | None) -> dict[TopicPartition, tuple[int, int]]:
    ends = await consumer.end_offsets(partitions)
    starts = await consumer.offsets_for_times({tp: since_ms for tp in partitions})
    stops = await consumer.offsets_for_times({tp: until_ms for tp in partitions}) if until_ms is not None else {}
    ranges = {}
    for tp in partitions:
        start = starts[tp].offset if starts.get(tp) is not None else ends[tp]
        stop = stops[tp].offset if stops.get(tp) is not None else ends[tp]
        ranges[tp] = (start, max(start, stop))
    return ranges


async def router_running(kafka: KafkaSettings, layout: TopicLayout) -> bool:
    """Whether the router group of ``layout`` has members, i.e. someone routes what is published."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap, **kafka.security)
    await admin.start()
    try:
        responses = await admin.describe_consumer_groups([f"{layout.prefix}router"])
        return any(group["members"] for r in responses for group in r.to_object()["groups"])
    except Exception:  # no such group yet, or no coordinator: nobody routes
        return False
    finally:
        await admin.close()
