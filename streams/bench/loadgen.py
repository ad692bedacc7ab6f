"""The load generator process: drives one pipeline and times every request to its reply.

Run as ``python -m streams.bench.loadgen PLAN_JSON``; prints one JSON object on stdout.

Phases, in order (``LoadPlan.phases`` picks which), on one warm producer and one reply reader:

1. warm-up (always): a trickle of requests until replies come back (the pipeline is up and assigned);
2. saturation: a window of requests kept in flight (refilled as replies arrive) for
   ``duration`` seconds; throughput counts the replies after the first fifth of it;
3. unloaded: single requests one after another, each sent when the one before is answered
   (the pipeline's latency with nothing queued anywhere);
4. fixed offered loads (open loop: sends follow the clock, never the replies), each for
   ``latency_duration`` seconds, latency measured on requests sent after the first second.
   A load above the pipeline's own sustained maximum is skipped, not run: its latency only
   grows with the length of the phase, so no percentile of it means anything.

Between phases every outstanding request is waited for, so one phase's backlog never
counts against the next. Latency runs from just before the request is handed to the
producer to the moment its reply is read here, i.e. it includes both client hops.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.bench.client_load import ClientLoad, percentiles
from streams.bench.mix import RequestMix

__all__ = ["LoadPlan", "LoadGenerator", "percentiles"]

TICK_S = 0.002
"How often the open-loop sender catches up with the clock."


@dataclass
class LoadPlan:
    """What the load generator does to one pipeline."""

    bootstrap: str
    requests_topic: str
    reply_topic: str
    run: str
    """Eight characters making this run's request ids unique."""
    duration: float = 20.0
    """Seconds of saturation."""
    latency_duration: float = 5.0
    """Seconds of each fixed offered load."""
    rates: list[float] = field(default_factory=lambda: [500.0, 2000.0])
    """Fixed offered loads, requests per second; ``half_max`` is added after saturation."""
    half_max: bool = True
    """Whether to measure latency at half of the measured maximum."""
    window: int = 3000
    """Requests in flight during saturation."""
    partitions: int = 4
    """Partitions of the request topic."""
    pipeline_pids: list[int] = field(default_factory=list)
    """The pipeline's processes, whose CPU time per answered request the saturation phase reports."""
    phases: list[str] = field(default_factory=lambda: ["saturate", "offered"])
    """Which phases to run, in this order: ``saturate``, ``unloaded``, ``offered``."""
    unloaded: int = 300
    """Sequential single requests (one in flight) of the ``unloaded`` phase."""
    max_rps: float | None = None
    """The pipeline's sustained maximum, for ``half_max`` and skipping loads above it, when this run does
    not saturate it itself."""
    objectives: list[str] = field(default_factory=lambda: ["title-ranking", "fraud-score"])
    """The request mix: alternating requests of these objectives (``streams.bench.mix``)."""
    form: str = "scoreline"
    """How each request is written (``RequestMix``): the contract's, or ``v2`` for MLServer's Kafka server."""
    driver: str = "raw"
    """Who sends the unloaded and fixed-rate requests: ``raw`` (this generator's pre-encoded batches) or
    ``client`` (one :class:`ScoreClient` call per request, ``streams.bench.client_load``; saturation stays raw)."""
    prefix: str = "scoreline."
    """The pipeline's topic prefix (the ``client`` driver's :class:`ScoreClient` finds its topics by it)."""
    warmup_timeout: float = 120.0
    drain_timeout: float = 30.0


class LoadGenerator:
    """Sends pre-encoded requests in batches per partition and matches replies by key."""

    def __init__(self, plan: LoadPlan) -> None:
        self.plan = plan
        self.mix = RequestMix(plan.run, plan.reply_topic, plan.partitions, objectives=tuple(plan.objectives),
                              form=plan.form)
        self.producer: AIOKafkaProducer | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.next_n = 0
        self.sent_at: dict[bytes, float] = {}  # request id -> perf_counter at send
        self.record_from = float("inf")  # only requests sent after this count towards latency
        self.latencies: list[float] = []
        self.answered = 0
        self.answered_at: list[float] = []  # perf_counter of each answer while counting throughput
        self.counting = False
        self._answer = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        plan = self.plan
        # The same delivery guarantees the pipelines use; no linger: requests go as whole batches
        # (send_batch), and a single unloaded request must not wait for company.
        self.producer = producer = AIOKafkaProducer(
            bootstrap_servers=plan.bootstrap, client_id="bench-loadgen", acks="all", enable_idempotence=True,
            linger_ms=0, max_batch_size=512 * 1024)
        await producer.start()
        self.consumer = consumer = AIOKafkaConsumer(
            bootstrap_servers=plan.bootstrap, client_id="bench-loadgen", group_id=None, enable_auto_commit=False,
            fetch_max_wait_ms=5, max_partition_fetch_bytes=4 << 20)
        await consumer.start()
        partitions = await self._wait_partitions(producer, plan.reply_topic)
        tps = [TopicPartition(plan.reply_topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        await self._wait_partitions(producer, plan.requests_topic)
        self._reader = asyncio.create_task(self._read(consumer))

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self.consumer is not None:
            await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()

    async def _wait_partitions(self, producer: AIOKafkaProducer, topic: str) -> list[int]:
        deadline = time.monotonic() + 30
        while True:
            partitions = await producer.partitions_for(topic)
            if partitions or time.monotonic() > deadline:
                return sorted(partitions or ())
            await asyncio.sleep(0.1)

    async def _read(self, consumer: AIOKafkaConsumer) -> None:
        sent_at, latencies = self.sent_at, self.latencies
        while True:
            batch = await consumer.getmany(timeout_ms=100, max_records=5000)
            now = time.perf_counter()
            for records in batch.values():
                for record in records:
                    began = sent_at.pop(record.key, None)
                    if began is None:
                        continue  # a duplicate reply: counted once
                    self.answered += 1
                    if began >= self.record_from:
                        latencies.append(now - began)
                    if self.counting:
                        self.answered_at.append(now)
            if batch:
                self._answer.set()

    async def send(self, count: int) -> None:
        """Publish the next ``count`` requests: one record batch per partition, no per-record await."""
        producer, mix, topic = self.producer, self.mix, self.plan.requests_topic
        assert producer is not None, "send() before start()"
        batches: dict[int, Any] = {}
        now = time.perf_counter()
        for _ in range(count):
            rid, template, value, headers = mix.record(self.next_n)
            self.next_n += 1
            batch = batches.get(template.partition)
            if batch is None:
                batch = batches[template.partition] = producer.create_batch()
            key = template.key or rid
            if batch.append(timestamp=None, key=key, value=value, headers=headers) is None:
                await producer.send_batch(batch, topic, partition=template.partition)
                batch = batches[template.partition] = producer.create_batch()
                batch.append(timestamp=None, key=key, value=value, headers=headers)
            self.sent_at[rid] = now
        for partition, batch in batches.items():
            await producer.send_batch(batch, topic, partition=partition)

    async def drain(self, timeout: float) -> int:
        """Wait for every outstanding reply; return how many never came."""
        deadline = time.perf_counter() + timeout
        while self.sent_at and time.perf_counter() < deadline:
            self._answer.clear()
            try:
                await asyncio.wait_for(self._answer.wait(), 0.5)
            except TimeoutError:
                pass
        lost = len(self.sent_at)
        self.sent_at.clear()
        return lost

    async def warm_up(self) -> None:
        """A trickle of requests until the pipeline answers (it is up and has its partitions)."""
        deadline = time.perf_counter() + self.plan.warmup_timeout
        start = self.answered
        while self.answered - start < 50:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"no replies on {self.plan.reply_topic} within {self.plan.warmup_timeout}s")
            await self.send(10)
            self._answer.clear()
            try:
                await asyncio.wait_for(self._answer.wait(), 0.05)
            except TimeoutError:
                pass
        await self.drain(self.plan.drain_timeout)

    async def saturate(self) -> dict:
        """Keep ``window`` requests in flight; the replies per second after a fifth of the time."""
        plan = self.plan
        began = time.perf_counter()
        end = began + plan.duration
        count_from = began + plan.duration / 5
        self.answered_at.clear()
        self.counting = True
        refill = max(1, plan.window // 10)
        cpu_from = None
        while (now := time.perf_counter()) < end:
            if cpu_from is None and now >= count_from:
                cpu_from = [cpu_seconds(pid) for pid in plan.pipeline_pids]
            room = plan.window - len(self.sent_at)
            if room >= refill:
                await self.send(room)
            self._answer.clear()
            try:
                await asyncio.wait_for(self._answer.wait(), 0.05)
            except TimeoutError:
                pass
        self.counting = False
        cpu_to = [cpu_seconds(pid) for pid in plan.pipeline_pids]
        counted = [t for t in self.answered_at if count_from <= t <= end]
        lost = await self.drain(plan.drain_timeout)
        report: dict[str, Any] = {"throughput_rps": round(len(counted) / (end - count_from), 1),
                  "measured_s": round(end - count_from, 2), "answered": len(counted), "unanswered": lost,
                  "window": plan.window}
        known_from = [c for c in cpu_from or () if c is not None]
        known_to = [c for c in cpu_to if c is not None]
        if cpu_from and len(known_from) == len(cpu_from) and len(known_to) == len(cpu_to) and counted:
            # Robust to a busy machine where requests/s is not: what one request costs the pipeline's processes.
            used = [after - before for before, after in zip(known_from, known_to)]
            report["cpu_us_per_request"] = round(sum(used) / len(counted) * 1e6, 1)
            report["cpu_share"] = round(sum(used) / (end - count_from), 2)
            # Cores each process used, in the order the layout starts them: which one is the bottleneck.
            report["cpu_share_by_process"] = [round(u / (end - count_from), 2) for u in used]
        return report

    async def offered(self, rate: float) -> dict:
        """Open loop at ``rate`` requests/s; percentiles of the requests sent after the first second."""
        seconds = self.plan.latency_duration
        self.latencies.clear()
        began = time.perf_counter()
        self.record_from = began + min(1.0, seconds / 4)
        end = began + seconds
        sent = 0
        while (now := time.perf_counter()) < end:
            due = int(rate * (now - began)) - sent
            if due > 0:
                await self.send(due)
                sent += due
            await asyncio.sleep(TICK_S)
        lost = await self.drain(self.plan.drain_timeout)
        self.record_from = float("inf")
        return {"offered_rps": round(rate, 1), "sent": sent, "unanswered": lost, **percentiles(self.latencies)}

    async def unloaded(self, count: int, timeout: float = 10.0) -> dict:
        """``count`` requests one after another, each sent once the one before is answered."""
        self.latencies.clear()
        self.record_from = 0.0
        lost = 0
        for _ in range(count):
            await self.send(1)
            deadline = time.perf_counter() + timeout
            while self.sent_at and time.perf_counter() < deadline:
                self._answer.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._answer.wait(), 0.5)
            if self.sent_at:
                lost += len(self.sent_at)
                self.sent_at.clear()
        self.record_from = float("inf")
        return {"requests": count, "unanswered": lost, **percentiles(self.latencies)}

    async def run(self) -> dict:
        plan = self.plan
        await self.warm_up()
        report: dict[str, Any] = {}
        if "saturate" in plan.phases:
            report.update(await self.saturate())
        maximum = report["throughput_rps"] if "saturate" in plan.phases else plan.max_rps or 0.0
        if plan.driver != "client" or not {"unloaded", "offered"} & set(plan.phases):
            return {**report, **await self._latency(self, maximum)}
        client = ClientLoad(plan)
        await client.start()
        try:
            await client.warm_up()
            return {**report, **await self._latency(client, maximum)}
        finally:
            await client.stop()

    async def _latency(self, driver: Any, maximum: float) -> dict:
        """The unloaded and fixed-rate phases, sent by ``driver``: this generator, or a ``ClientLoad``."""
        plan = self.plan
        report: dict[str, Any] = {}
        if "unloaded" in plan.phases:
            report["unloaded_ms"] = await driver.unloaded(plan.unloaded)
        if "offered" not in plan.phases or (not plan.rates and not plan.half_max):
            return report
        loads = {str(int(r)): r for r in plan.rates}
        if plan.half_max:
            loads["half_max"] = maximum / 2
        latency = {}
        for name, rate in loads.items():
            if rate > maximum:
                latency[name] = {"offered_rps": rate, "p50": None, "p95": None, "p99": None,
                                 "skipped": f"offered load above this pipeline's sustained maximum ({maximum} rps)"}
                continue
            latency[name] = await driver.offered(rate)
        report["latency_ms"] = latency
        return report

    async def run_all(self) -> dict:
        """``run``, plus how many requests were answered in all (for the CPU cost per request)."""
        report = await self.run()
        report["answered_total"] = self.answered
        return report


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) process ``pid`` and its live descendants have used so far (Linux only; None
    elsewhere, or once ``pid`` is gone). Descendants count: MLServer's parallel inference workers and
    scoreline's scoring processes are children of the process the bench started."""
    ticks_of: dict[int, int] = {}
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            ticks_of[int(entry)] = int(fields[11]) + int(fields[12])  # utime + stime
            children.setdefault(int(fields[1]), []).append(int(entry))  # by parent pid
    if pid not in ticks_of:
        return None
    ticks, frontier = 0, [pid]
    while frontier:
        process = frontier.pop()
        ticks += ticks_of[process]
        frontier.extend(children.get(process, ()))
    return ticks / os.sysconf("SC_CLK_TCK")


async def _main(plan: LoadPlan) -> dict:
    generator = LoadGenerator(plan)
    await generator.start()
    try:
        return await generator.run_all()
    finally:
        await generator.stop()


if __name__ == "__main__":
    report = asyncio.run(_main(LoadPlan(**orjson.loads(sys.argv[1]))))
    sys.stdout.buffer.write(orjson.dumps(report) + b"\n")
    sys.stdout.flush()
