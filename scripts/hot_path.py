"""CPU microseconds per request in the router's and the workers' ``handle``, in process, without a broker.

    .venv/bin/python scripts/hot_path.py [--batch 50] [--rounds 40] [--repeat 30] [--json]

``scoreline bench`` is the measure of the pipeline; on a shared 2-core machine its CPU per
request moves by 10-30% between runs of the same code, which hides any single change worth
a few percent. This replays the bench's request mix (``streams.bench.mix``) through
``Router.handle`` and then each shard's ``Worker.handle``, with the records round-tripped
through Kafka's v2 record format (so header and value encoding are paid as on the wire), and
reports the best of ``--repeat`` passes in process CPU time: stable to a few percent, so a
change to a hot path can be judged before and after. What it leaves out is aiokafka's
networking, the broker and the event loop's waiting: read it next to the bench, not instead.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder  # noqa: E402
from aiokafka.structs import ConsumerRecord, TopicPartition  # noqa: E402

from streams.bench.layout import bench_layout, bench_rules  # noqa: E402
from streams.bench.mix import RequestMix  # noqa: E402
from streams.services.router import Router  # noqa: E402
from streams.services.worker import Worker  # noqa: E402
from streams.transport.settings import KafkaSettings  # noqa: E402
from workflows import ModelRegistry  # noqa: E402

PREFIX = "hot-path."


class CapturingOutbox:
    """Stands in for ``streams.transport.outbox.Outbox``: keeps what would be produced."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes, bytes | None, list]] = []

    def put(self, topic, value, *, key=None, partition=None, headers=(), timestamp_ms=None, tag=None) -> None:
        self.records.append((topic, value, key, list(headers or ())))

    async def add(self, topic, value, **options) -> None:
        self.put(topic, value, **options)


def over_the_wire(topic: str, produced: list[tuple[str, bytes, bytes | None, list]]) -> list[ConsumerRecord]:
    """``produced`` as a consumer of ``topic`` partition 0 gets it: through one v2 record batch."""
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=0, producer_id=-1,
                                        producer_epoch=-1, base_sequence=-1, batch_size=1 << 26)
    for offset, (_, value, key, headers) in enumerate(produced):
        builder.append(offset, timestamp=None, key=key, value=value, headers=headers)
    now_ms = int(time.time() * 1000)
    return [ConsumerRecord(topic, 0, r.offset, r.timestamp or now_ms, 0, r.key, r.value, None,
                           len(r.key or b""), len(r.value or b""), tuple(r.headers))
            for r in DefaultRecordBatch(bytes(builder.build()))]


async def measure(batch: int, rounds: int, repeat: int) -> dict:
    layout, rules = bench_layout(PREFIX), bench_rules(PREFIX)
    kafka = KafkaSettings(bootstrap="127.0.0.1:1")  # never connected
    router = Router(kafka, layout, lambda: rules)
    for topic in [layout.shard(shard) for shard in rules.shards] + [layout.shadow]:
        router._partitions[topic] = 4  # what partition_count would have looked up
    registry = ModelRegistry.default()
    for model_id in registry.ids():  # loaded, as a running worker's are (a model not loaded yet waits for its load)
        registry.get(model_id)
    workers = {shard: Worker(kafka, layout, registry, shard=shard) for shard in rules.shards}
    mix = RequestMix("hotpath0", f"{PREFIX}replies.demo", 4)
    requests = []
    for n in range(batch * rounds):
        _, template, body, headers = mix.record(n)
        requests.append((layout.requests, body, template.key, headers))
    incoming = over_the_wire(layout.requests, requests)
    router_batches = [{TopicPartition(layout.requests, 0): incoming[i * batch:(i + 1) * batch]} for i in range(rounds)]

    routed = CapturingOutbox()
    for b in router_batches:
        await router.handle(b, routed)
    by_topic: dict[str, list] = {}
    for record in routed.records:
        by_topic.setdefault(record[0], []).append(record)
    worker_batches = []
    for topic, produced in by_topic.items():
        work = over_the_wire(topic, produced)
        worker = workers[topic.rsplit(".", 1)[-1]]
        worker_batches += [(worker, {TopicPartition(topic, 0): work[i:i + batch]}) for i in range(0, len(work), batch)]

    answered = CapturingOutbox()  # one untimed pass: every request should get its result
    for worker, b in worker_batches:
        await worker.handle(b, answered)
    results = sum(1 for topic, *_ in answered.records if topic == f"{PREFIX}replies.demo")

    gc.freeze()  # as the services do (streams.services.batch._quiet_collector)
    n = batch * rounds
    best_router = best_worker = float("inf")
    for _ in range(repeat):
        began = time.process_time()
        for b in router_batches:
            await router.handle(b, CapturingOutbox())
        best_router = min(best_router, (time.process_time() - began) / n * 1e6)
        began = time.process_time()
        for worker, b in worker_batches:
            await worker.handle(b, CapturingOutbox())
        best_worker = min(best_worker, (time.process_time() - began) / n * 1e6)
    began = time.process_time()
    for topic, produced in by_topic.items():
        over_the_wire(topic, produced)
    wire = (time.process_time() - began) / n * 1e6
    headers = sum(len(r[3]) for r in routed.records) / len(routed.records)
    return {"requests": n, "routed": len(routed.records), "answered": results, "batch": batch,
            "router_us": round(best_router, 2), "worker_us": round(best_worker, 2),
            "work_topic_wire_us": round(wire, 2), "headers_per_work_record": round(headers, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=50, help="records per batch (the bench's router averages ~50)")
    parser.add_argument("--rounds", type=int, default=40, help="batches per pass")
    parser.add_argument("--repeat", type=int, default=30, help="passes; the best one is reported")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of a line")
    args = parser.parse_args()
    figures = asyncio.run(measure(args.batch, args.rounds, args.repeat))
    if args.json:
        print(json.dumps(figures))
    else:
        print(f"{figures['requests']} requests in batches of {figures['batch']}: router {figures['router_us']} µs, "
              f"workers {figures['worker_us']} µs CPU per request; the work topic's record format "
              f"{figures['work_topic_wire_us']} µs ({figures['headers_per_work_record']} headers a record)")


if __name__ == "__main__":
    main()
