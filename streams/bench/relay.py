"""The ceiling: a two-hop relay in raw aiokafka, requests -> relay topic -> reply topic.

Run as ``python -m streams.bench.relay BOOTSTRAP PREFIX [both|in|out]`` (which hops this process
runs: both, or one of a process pair); stops on SIGTERM/SIGINT.

Each hop decodes and re-encodes every message with orjson and does no routing and no
scoring: the most this machine moves through the broker with Python on both ends. It uses
the same client settings as scoreline (idempotent producer, acks=all, no linger, the same
batch sizes, manual commits after the batch is acknowledged) and the fastest way aiokafka
offers to produce: ``getmany`` in, one ``create_batch``/``send_batch`` per partition out.
As scoreline's services do, a hop commits in the background, in order, while it fetches
and relays the next batch: waiting for each commit would hold the ceiling below what a
Python process can move.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import orjson

from routing import partition_for
from streams.bench.layout import CLIENT, bench_layout
from streams.transport.kafka import aiokafka_consumer, aiokafka_producer
from streams.transport.settings import KafkaSettings

__all__ = ["Hop", "main"]


class Hop:
    """One relay hop: consume ``source``, re-encode, produce to ``target`` keyed by user or request id."""

    def __init__(self, kafka: KafkaSettings, source: str, target: str, group: str, *, by_request_id: bool) -> None:
        self.kafka = kafka
        self.source, self.target, self.group = source, target, group
        self.by_request_id = by_request_id
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        # No linger, as scoreline's producers: whole batches are handed over, so lingering only delays them.
        producer = aiokafka_producer(self.kafka, f"relay-{self.group}", linger_ms=0)
        consumer = aiokafka_consumer(self.kafka, self.source, group_id=self.group, role=f"relay-{self.group}")
        await producer.start()
        await consumer.start()
        committing: asyncio.Task | None = None
        try:
            partitions = len(await producer.partitions_for(self.target))
            while not self.stopping.is_set():
                batch = await consumer.getmany(timeout_ms=100)
                if not batch:
                    continue
                out: dict[int, list] = {}
                for records in batch.values():
                    for record in records:
                        body = orjson.loads(record.value)
                        key = body["request_id"] if self.by_request_id else body["context"]["user_id"]
                        out.setdefault(partition_for(key, partitions), []).append(
                            (key.encode(), orjson.dumps(body), list(record.headers)))
                futures = []
                for partition, rows in out.items():
                    builder = producer.create_batch()
                    for key, value, headers in rows:
                        if builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
                            futures.append(await producer.send_batch(builder, self.target, partition=partition))
                            builder = producer.create_batch()
                            builder.append(timestamp=None, key=key, value=value, headers=headers)
                    futures.append(await producer.send_batch(builder, self.target, partition=partition))
                await asyncio.gather(*futures)
                committing = asyncio.create_task(
                    self._commit(consumer, {tp: records[-1].offset + 1 for tp, records in batch.items()}, committing))
        finally:
            if committing is not None:
                await committing
            await consumer.stop()
            await producer.stop()

    @staticmethod
    async def _commit(consumer, offsets: dict, after: asyncio.Task | None) -> None:
        """Commit after the commits before it (as ``streams.services.batch.BatchService`` does)."""
        if after is not None:
            await after
        await consumer.commit(offsets)


async def main(bootstrap: str, prefix: str, hops_wanted: str = "both") -> None:
    """Run the hops (``both``, ``in`` or ``out``) until SIGTERM or SIGINT."""
    kafka = KafkaSettings(bootstrap=bootstrap)
    layout = bench_layout(prefix)
    hops = []
    if hops_wanted in ("both", "in"):
        hops.append(Hop(kafka, layout.requests, f"{prefix}relay", f"{prefix}relay-in", by_request_id=False))
    if hops_wanted in ("both", "out"):
        hops.append(Hop(kafka, f"{prefix}relay", layout.replies(CLIENT), f"{prefix}relay-out", by_request_id=True))
    if not hops:
        raise SystemExit(f"relay: hops must be both, in or out, not {hops_wanted!r}")
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for hop in hops:
            hop.stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    await asyncio.gather(*(h.run() for h in hops))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
