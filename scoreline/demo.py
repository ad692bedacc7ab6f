"""``scoreline demo``: the whole pipeline end to end, with every outcome accounted for.

Starts the services in-process, publishes N requests per objective through the client
library plus a known number of bad inputs of every kind, waits for every outcome the
contract promises (a result, a dead letter, or both; a primary and a shadow record per
shadow copy) and summarises what arrived.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from routing import RequestView, Rules, extract_shard_key, route
from schemas import codec
from schemas.errors import InvalidMessage
from schemas.messages import Status
from streams.client.score_client import ScoreClient, ScoreTimeout, now_ms
from streams.services.pipeline import Pipeline, PipelineOptions
from streams.topics import TopicLayout
from streams.transport.kafka import KafkaTransport
from streams.transport.settings import KafkaSettings
from streams.transport.tail import TopicTail
from workflows import ModelRegistry, sample_items

__all__ = ["DemoPlan", "run_demo"]

STATUSES = (Status.OK, Status.ERROR, Status.EXPIRED)

BAD_KINDS = ("malformed_json", "unknown_objective", "wrong_type", "forbidden_reply_to", "expired",
             "payload_too_large")


@dataclass
class Expected:
    """What the contract promises for one request id."""

    status: str | None
    """The result status expected on the reply topic, or None for no result."""
    dead_letter: bool
    """Whether a dead-letter record is expected."""
    shadows: int = 0
    """Shadow copies expected; each gives one primary-side and one shadow-side record."""


@dataclass
class DemoPlan:
    """How much traffic the demo sends."""

    requests: int = 2000
    """Good requests per objective."""
    bad_per_kind: int = 5
    """Bad inputs of each kind."""
    concurrency: int = 200
    """Requests in flight at once from the demo's client."""
    timeout: float = 120.0
    """Seconds to wait for every outcome after the last send."""
    seed: int = 7
    metrics_port: int | None = None
    """Serve the demo pipeline's ``/metrics`` here while it runs (for ``scoreline top``); None: don't."""
    expectations: dict[str, Expected] = field(default_factory=dict)


async def run_demo(kafka: KafkaSettings, layout: TopicLayout, rules: Rules, registry: ModelRegistry,
                   plan: DemoPlan, progress=lambda _: None) -> dict:
    """Run the demo and return its summary (``missing`` is 0 when everything arrived)."""
    run = uuid.uuid4().hex[:8]
    client_name = "demo"
    reply_topic = layout.replies(client_name)
    async with Pipeline(kafka, layout, rules, registry, PipelineOptions(metrics_port=plan.metrics_port)) as pipeline:
        await pipeline.wait_ready()
        progress(f"pipeline ready (rules version {rules.version}); sending ...")
        async with TopicTail(kafka, [reply_topic]) as replies, \
                TopicTail(kafka, [layout.deadletter, layout.shadow_results]) as sidecar, \
                ScoreClient(kafka, client_name, layout=layout) as client:
            latencies: list[float] = []
            began = time.perf_counter()
            await _send_good(client, rules, plan, run, latencies, progress)
            await _send_bad(client, kafka, layout, rules, plan, run)
            sent_at_end = time.perf_counter()
            tally = _Tally(run)
            done = await replies.wait_for(lambda: tally.update(replies.records, sidecar.records, plan), plan.timeout)
            if not done:  # one last look at what the sidecar collected
                tally.update(replies.records, sidecar.records, plan)
            elapsed = max(tally.last_result_at - began if tally.last_result_at else sent_at_end - began, 1e-9)
    good = plan.requests * len(rules.objectives)
    return {
        "sent": good + plan.bad_per_kind * len(BAD_KINDS),
        "bad_sent": plan.bad_per_kind * len(BAD_KINDS),
        "results": {s: tally.statuses.get(s, 0) for s in STATUSES},
        "by_objective": {objective: {"results": {s: counts.get(s, 0) for s in STATUSES},
                                     "models": {k[6:]: n for k, n in sorted(counts.items()) if k.startswith("model:")}}
                         for objective, counts in sorted(tally.by_objective.items())},
        "dead_lettered": sum(tally.dead_letters.values()),
        "dead_letters_by_code": dict(tally.dead_letter_codes),
        "shadow_results": {"primary": tally.shadow_sides["primary"], "shadow": tally.shadow_sides["shadow"]},
        "missing": tally.missing,
        "duplicates": tally.duplicates,
        "examples": tally.examples,
        "latency_ms": _percentiles(latencies),
        "throughput_rps": round(good / elapsed, 1),
        "rules_version": rules.version,
        "run_id": run,
    }


async def _send_good(client: ScoreClient, rules: Rules, plan: DemoPlan, run: str, latencies: list[float],
                     progress) -> None:
    window = asyncio.Semaphore(plan.concurrency)

    async def one(request) -> None:
        async with window:
            began = time.perf_counter()
            try:
                await client.score_request(request, timeout=plan.timeout)
            except ScoreTimeout:
                return
            latencies.append((time.perf_counter() - began) * 1000)

    requests = []
    for objective in sorted(rules.objectives):
        for i, item in enumerate(sample_items(objective, plan.requests, seed=plan.seed)):
            request = client.request(objective, item.context, item.payload, request_id=f"demo-{run}-{objective}-{i}")
            requests.append(request)
            plan.expectations[request.request_id] = Expected(Status.OK, False, _shadows(request, rules))
    progress(f"{len(requests)} requests over {len(rules.objectives)} objectives, {plan.concurrency} in flight")
    await asyncio.gather(*(one(r) for r in requests))


def _shadows(request, rules: Rules) -> int:
    view = RequestView(request.request_id, request.objective, request.client, request.reply_to,
                       extract_shard_key(request.context, rules.shard_key_path(request.objective)),
                       request.context, request.model)
    return len(route(view, rules).shadows)


async def _send_bad(client: ScoreClient, kafka: KafkaSettings, layout: TopicLayout, rules: Rules, plan: DemoPlan,
                    run: str) -> None:
    """A known number of every kind of bad input, published the way a careless producer would."""
    producer = KafkaTransport(kafka).producer("demo-bad")
    await producer.start()
    sent: list[asyncio.Future[Any]] = []
    try:
        objective = "title-ranking" if "title-ranking" in rules.objectives else sorted(rules.objectives)[0]
        for i in range(plan.bad_per_kind):
            base: dict[str, Any] = {"objective": objective, "client": client.client, "reply_to": client.reply_to,
                    "context": {"user_id": f"u-{i}", "country": "US"}, "payload": {"titles": ["t-1"]}}
            rid = f"demo-{run}-bad-{{}}-{i}"
            bodies = {
                "malformed_json": (f'{{"request_id": "{rid.format("malformed_json")}", "objective": '.encode(),
                                   Expected(None, True)),
                "unknown_objective": (orjson.dumps({**base, "request_id": rid.format("unknown_objective"),
                                                    "objective": "no-such-objective"}),
                                      Expected(Status.ERROR, True)),
                "wrong_type": (orjson.dumps({**base, "request_id": rid.format("wrong_type"), "context": ["u-1"]}),
                               Expected(Status.ERROR, True)),
                "forbidden_reply_to": (orjson.dumps({**base, "request_id": rid.format("forbidden_reply_to"),
                                                     "reply_to": f"{layout.prefix}replies.someone-else"}),
                                       Expected(None, True)),
                "payload_too_large": (orjson.dumps({**base, "request_id": rid.format("payload_too_large"),
                                                    "payload": {"titles": ["t-1"] * 60_000}}),
                                      Expected(None, True)),
            }
            for kind, (value, expected) in bodies.items():
                plan.expectations[rid.format(kind)] = expected
                sent.append(await producer.send(layout.requests, value))
            expired = client.request(objective, base["context"], base["payload"], request_id=rid.format("expired"),
                                     deadline_ms=now_ms() - 60_000)
            # Expiry is decided by the worker: the request is routed (and maybe shadowed) first.
            plan.expectations[expired.request_id] = Expected(Status.EXPIRED, False, _shadows(expired, rules))
            await client.submit(objective, expired.context, expired.payload, request_id=expired.request_id,
                                deadline_ms=expired.deadline_ms)
        await asyncio.gather(*sent)  # every bad input on the topic before the tally starts counting
    finally:
        await producer.stop()


class _Tally:
    """Matches what arrived against what the contract promises, per request id."""

    def __init__(self, run: str) -> None:
        self.run = run
        self.prefix = f"demo-{run}-"
        self._seen = [0, 0]
        self.results: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.by_objective: dict[str, Counter[str]] = {}
        """Per objective: results by status, and by the model that scored them (``model:<id>``)."""
        self.dead_letters: Counter[str] = Counter()
        self.dead_letter_codes: Counter[str] = Counter()
        self.shadow_sides: Counter[str] = Counter()
        self.shadow_by_id: Counter[str] = Counter()
        self.last_result_at: float | None = None
        self.missing = 0
        self.duplicates = 0
        self.examples: dict[str, list[str]] = {"missing": [], "duplicates": []}

    def update(self, replies: list, sidecar: list, plan: DemoPlan) -> bool:
        for record in replies[self._seen[0]:]:
            result = codec.decode_result(record.value)
            if result.request_id.startswith(self.prefix):
                self.results[result.request_id] += 1
                self.statuses[result.status] += 1
                counts = self.by_objective.setdefault(result.objective or "?", Counter())
                counts[result.status] += 1
                if result.model:
                    counts[f"model:{result.model}"] += 1
                self.last_result_at = time.perf_counter()
        self._seen[0] = len(replies)
        for record in sidecar[self._seen[1]:]:
            self._sidecar(record)
        self._seen[1] = len(sidecar)
        self.missing, self.duplicates = self._reconcile(plan)
        return self.missing == 0

    def _sidecar(self, record) -> None:
        try:
            if record.topic.endswith("deadletter"):
                letter = codec.decode_dead_letter(record.value)
                rid = letter.request_id or _id_in(letter.original(), self.prefix)
                if rid and rid.startswith(self.prefix):
                    self.dead_letters[rid] += 1
                    self.dead_letter_codes[letter.code] += 1
            else:
                side = codec.decode_shadow_result(record.value)
                if side.request_id.startswith(self.prefix):
                    self.shadow_sides[side.role] += 1
                    self.shadow_by_id[side.request_id] += 1
        except InvalidMessage:
            pass  # not ours to judge

    def _reconcile(self, plan: DemoPlan) -> tuple[int, int]:
        missing = duplicates = 0
        self.examples = {"missing": [], "duplicates": []}
        for rid, expected in plan.expectations.items():
            for what, got, want in (
                ("result", self.results.get(rid, 0), int(expected.status is not None)),
                ("dead_letter", self.dead_letters.get(rid, 0), int(expected.dead_letter)),
                ("shadow_records", self.shadow_by_id.get(rid, 0), 2 * expected.shadows),
            ):
                if got != want:
                    kind = "missing" if got < want else "duplicates"
                    if len(self.examples[kind]) < 5:
                        self.examples[kind].append(f"{rid}: {what} {got} of {want}")
                missing += max(0, want - got)
                duplicates += max(0, got - want)
        return missing, duplicates


def _id_in(original: bytes, prefix: str) -> str | None:
    """The request id inside bytes too broken to parse (the malformed inputs)."""
    start = original.find(prefix.encode())
    if start < 0:
        return None
    end = original.find(b'"', start)
    return original[start:end].decode(errors="replace") if end > start else None


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    arr = np.asarray(values)
    return {f"p{q}": round(float(np.percentile(arr, q)), 2) for q in (50, 95, 99)}
