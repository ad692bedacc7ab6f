"""Keyless requests against a shard whose partition 0 is worked five times slower than the others.

The router is scoreline's own, on a real broker; the shard's "workers" are four plain
consumers in the shard's worker group, one per partition (assigned by hand, so no rebalance
moves them), each taking ``service_ms`` per record, the one on partition 0 ``slow_factor``
times that, and committing after every fetch as a worker does. A plain producer sends keyless
fraud-score requests (no ``user_id``: no shard key) at ``rate`` per second, faster than an
even share lets the slow partition keep up with. What lands on each partition of the shard
topic is counted from its end offsets.

Used by ``test_keyless_balance.py`` and by ``scripts/keyless_balance.py`` (the figure in
docs/operations.md).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from streams_testing import rules_under

from streams.services.router import Router
from streams.topics import TopicLayout
from streams.transport.admin import ensure_topics
from streams.transport.settings import KafkaSettings

PARTITIONS = 4
OBJECTIVE, MODEL = "fraud-score", "fraud-score@v1"


@dataclass(frozen=True)
class KeylessRun:
    """What one run put where."""

    balance: bool
    sent: int
    routed: int
    per_partition: list[int]
    slow_partition: int
    slow_share: float
    fair_share: float
    slow_lag_at_end: int


async def _work(consumer: AIOKafkaConsumer, tp: TopicPartition, service_s: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        batch = await consumer.getmany(tp, timeout_ms=100, max_records=20)
        records = batch.get(tp, [])
        if not records:
            continue
        await asyncio.sleep(service_s * len(records))  # the model's time for these records
        await consumer.commit({tp: records[-1].offset + 1})


def _request(layout: TopicLayout, i: int) -> bytes:
    return orjson.dumps({"request_id": f"k-{i}", "objective": OBJECTIVE, "client": "demo",
                         "reply_to": layout.replies("demo"), "context": {"country": "US"},
                         "payload": {"amount": 10.0, "merchant": "m-1"}})


async def run_keyless(bootstrap: str, prefix: str, *, balance: bool = True, rate: float = 400.0,
                      seconds: float = 8.0, service_ms: float = 4.0, slow_factor: float = 5.0) -> KeylessRun:
    """One run on fresh topics under ``prefix``; returns what landed where (the topics are left for the caller)."""
    layout = TopicLayout(prefix=prefix, request_partitions=1, shard_partitions=PARTITIONS, reply_partitions=1)
    rules = rules_under(layout)
    shard = rules.models[MODEL]
    await ensure_topics(bootstrap, layout.specs(rules.shards, [layout.replies("demo")]))
    kafka = KafkaSettings(bootstrap=bootstrap)
    work = layout.shard(shard)
    tps = [TopicPartition(work, p) for p in range(PARTITIONS)]
    stop = asyncio.Event()
    workers = []
    for tp in tps:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=layout.worker_group(shard),
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        consumer.assign([tp])
        service_s = service_ms / 1000 * (slow_factor if tp.partition == 0 else 1.0)
        workers.append((consumer, asyncio.create_task(_work(consumer, tp, service_s, stop))))
    router = Router(kafka, layout, lambda: rules, balance=balance)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        await router.start()
        await router.wait_assigned()
        total = int(rate * seconds)
        began = time.monotonic()
        for i in range(total):
            due = began + i / rate
            if (ahead := due - time.monotonic()) > 0:
                await asyncio.sleep(ahead)
            await producer.send(layout.requests, _request(layout, i))
        await producer.flush()
        deadline = time.monotonic() + 60
        while router.routed < total and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        routed = router.routed
        ends = await workers[0][0].end_offsets(tps)
        committed = await workers[0][0].committed(tps[0])
    finally:
        stop.set()
        await router.stop()
        await producer.stop()
        for consumer, task in workers:
            await task
            await consumer.stop()
    per_partition = [ends[tp] for tp in tps]
    landed = sum(per_partition) or 1
    return KeylessRun(balance=balance, sent=total, routed=routed, per_partition=per_partition, slow_partition=0,
                      slow_share=round(per_partition[0] / landed, 4), fair_share=1 / PARTITIONS,
                      slow_lag_at_end=per_partition[0] - (committed or 0))


def as_dict(run: KeylessRun) -> dict:
    """The run as JSON-ready fields."""
    return asdict(run)
