"""Replays: the requests a topic holds between two times, republished as backfill traffic.

:func:`parse_time` reads the ``--since``/``--until`` times; :func:`replay` finds each
partition's offset range by timestamp and republishes the requests in it to their
original ``reply_to``.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

from schemas import codec
from schemas import headers as H
from schemas.errors import ErrorCode, InvalidMessage, ScorelineError
from schemas.messages import Traffic
from streams.client.rate import TokenBucket
from streams.client.records import request_record
from streams.topics import TopicLayout
from streams.transport.headers import headers_of
from streams.transport.kafka import KafkaTransport
from streams.transport.protocols import Reader, TopicPartition
from streams.transport.settings import KafkaSettings

__all__ = ["ReplayFailed", "parse_time", "replay"]


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
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


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
    transport = KafkaTransport(kafka)
    consumer = transport.reader("replay")
    await consumer.start()
    try:
        partitions = await _topic_partitions(consumer, topic)
    except BaseException:
        await consumer.stop()
        raise
    producer = transport.producer("replay")
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


async def _topic_partitions(reader: Reader, topic: str) -> list[TopicPartition]:
    partitions = (await reader.partitions(topic)).get(topic)
    if not partitions:
        raise InvalidMessage(ErrorCode.INVALID_VALUE, f"topic {topic} does not exist", field="from_topic")
    return [TopicPartition(topic, p) for p in sorted(partitions)]


async def _offset_ranges(consumer: Reader, partitions: list[TopicPartition], since_ms: int,
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
