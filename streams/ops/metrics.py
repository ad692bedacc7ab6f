"""What a pipeline tells Prometheus: metric definitions, per-batch tallies and the views read at scrape time.

Each pipeline (``streams.services.pipeline.Pipeline``) owns one :class:`PipelineMetrics` over its own
``CollectorRegistry`` (never the global one), so several pipelines can run in one process
(tests) without mixing their figures. Each service gets a :class:`ServiceMetrics`: the hot
path only bumps plain ``dict`` tallies (``routed``, ``result``, ``dead_letter``) and the
service hands the batch to :meth:`ServiceMetrics.batch_done` once it is committed, which
moves the tallies into Prometheus with one ``inc`` per label set. A batch that fails is
replayed, so :meth:`ServiceMetrics.batch_failed` drops its tallies rather than count twice.

Figures that are a state rather than an event (consumer lag, assigned partitions, the rules
version in force, which models are loaded) are read from the services when scraped.

Metrics (all prefixed ``scoreline_``; see docs/operations.md for what each is for):

==========================================  =========  ==========================================
name                                        type       labels
==========================================  =========  ==========================================
requests_routed_total                       counter    objective, model, cell, traffic
shadow_copies_total                         counter    objective, model (the candidate)
results_total                               counter    role, shard, objective, model, status
dead_letters_total                          counter    role, code
records_consumed_total                      counter    role, group
batches_total                               counter    role, group
batch_failures_total                        counter    role, group
batch_size_records                          histogram  role
batch_stage_seconds                         histogram  role, stage (handle, settle, commit)
result_latency_seconds                      histogram  role, objective, model, traffic
consumer_lag_records                        gauge      group, topic, partition
assigned_partitions                         gauge      role, group
work_in_flight_records                      gauge      role, group (taken from Kafka, not committed yet)
rules_version                               gauge      (none)
model_loaded                                gauge      model
model_loads_total                           counter    model, outcome (loaded, failed)
model_bytes                                 gauge      kind (held, budget)
model_registry_events_total                 counter    event (loads, failures, evictions, bypasses)
model_load_seconds                          histogram  (none)
model_measured_bytes                        gauge      model
scoring_queue_requests                      gauge      role, model (waiting for the model's next call)
scoring_calls_in_flight                     gauge      role, model (0 or 1)
scoring_queue_wait_seconds                  histogram  role, model
scoring_batch_cost                          histogram  role, model (items, or what batch_cost counts)
workflow_timeouts_total                     counter    role, model
scoring_threads                             gauge      executor
scoring_busy_seconds_total                  counter    executor (its rate / threads: utilisation)
event_loop_lag_seconds                      histogram  loop (live, side): how late a due wake-up came
event_loop_lag_max_seconds                  gauge      loop: the latest wake-up since start
==========================================  =========  ==========================================
"""

from __future__ import annotations

import bisect
import itertools
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from streams.ops import tracing
from streams.ops.health import CONTENT_TYPE, PipelineView, ServiceView
from streams.ops.loop_lag import loop_lag_families
from streams.transport.protocols import Batch, Consumer
from workflows.registry import LOAD_BUCKETS_S

__all__ = ["PipelineMetrics", "ServiceMetrics", "LATENCY_BUCKETS", "BATCH_BUCKETS", "CONTENT_TYPE"]

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Seconds: a millisecond-scale scorer with room for backlog and backfill."""

BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
"""Records per consumed batch (``KafkaSettings.fetch_max_records`` caps it, 1000 by default)."""


class PipelineMetrics:
    """Every metric one pipeline exposes, registered in its own ``CollectorRegistry``.

    ``pipeline`` may be None (a service run on its own): the event metrics still count and
    the scrape-time views are simply empty.
    """

    def __init__(self, pipeline: PipelineView | None = None, registry: CollectorRegistry | None = None) -> None:
        self.pipeline = pipeline
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.routed = Counter("scoreline_requests_routed", "Requests the router sent to a shard.",
                              ["objective", "model", "cell", "traffic"], registry=r)
        self.shadow_copies = Counter("scoreline_shadow_copies", "Shadow copies the router sent, per candidate.",
                                     ["objective", "model"], registry=r)
        self.results = Counter("scoreline_results", "Results written (role=shadow: shadow-side records).",
                               ["role", "shard", "objective", "model", "status"], registry=r)
        self.dead_letters = Counter("scoreline_dead_letters", "Records dead-lettered, by error code.",
                                    ["role", "code"], registry=r)
        self.records = Counter("scoreline_records_consumed", "Input records processed and committed.",
                               ["role", "group"], registry=r)
        self.batches = Counter("scoreline_batches", "Batches processed and committed.", ["role", "group"], registry=r)
        self.batch_failures = Counter("scoreline_batch_failures", "Batches that failed and were rewound to replay.",
                                      ["role", "group"], registry=r)
        self.batch_size = Histogram("scoreline_batch_size_records", "Records per consumed batch.", ["role"],
                                    buckets=BATCH_BUCKETS, registry=r)
        self.stage_seconds = Histogram(
            "scoreline_batch_stage_seconds",
            "Time per batch stage: handle (decode, route or score, queue output), settle (wait for every "
            "acknowledgement), commit (hand the offsets over; the commit completes in the background).",
            ["role", "stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.latency = Histogram(
            "scoreline_result_latency_seconds",
            "From the request's Kafka timestamp to its result being queued (end to end through the router); "
            "traffic live, backfill or shadow, so live latency can be watched apart (a backfill governs itself by it).",
            ["role", "objective", "model", "traffic"], buckets=LATENCY_BUCKETS, registry=r)
        self.services: list[ServiceMetrics] = []
        r.register(_LiveState(self))

    def bind(self, services: Iterable[ServiceView] | None = None) -> None:
        """Give each service (default: the pipeline's) a :class:`ServiceMetrics` reporting here."""
        if services is None:
            services = self.pipeline.services if self.pipeline is not None else ()
        for service in services:
            # Only batch services carry tallies (a role built otherwise, e.g. on faust, reports its own way).
            if not isinstance(getattr(service, "metrics", None), ServiceMetrics) \
                    or any(m.service is service for m in self.services):
                continue
            service.metrics = ServiceMetrics(service, self)
            self.services.append(service.metrics)

    def exposition(self) -> bytes:
        """The current figures in the Prometheus text format."""
        return generate_latest(self.registry)

    def health(self) -> tuple[bool, str]:
        """Live: no role's loop has died."""
        for m in self.services:
            if m.service.failed is not None:
                return False, f"{m.service.role} stopped: {m.service.failed!r}"
        return True, "ok"

    def readiness(self) -> tuple[bool, str]:
        """Ready: live, every role has partitions assigned, and every model its shard serves has loaded."""
        live, why = self.health()
        if not live:
            return False, why
        if not self.services:
            return False, "no roles started"
        rules = self.pipeline.rules() if self.pipeline is not None else None
        for m in self.services:
            service = m.service
            consumer = service.consumer
            if consumer is None or not consumer.assignment():
                return False, f"{service.role} ({service.group_id}): no partitions assigned"
            registry = getattr(service, "registry", None)
            if rules is None or registry is None or not service.role.endswith(("worker", "shadow")):
                continue
            shard = getattr(service, "shard", None)
            wanted = [model for model, on in rules.models.items() if on == shard] if service.role == "worker" \
                else _shadow_models(rules)
            # Read state, never change it: no load, no use counted. The worker preloads its models as each
            # rules version comes into force; one loaded once and evicted since by the budget still counts.
            loaded, problems = set(registry.loaded()), registry.problems()
            for model in wanted:
                if model in loaded:
                    continue
                if model in problems:
                    return False, f"model {model} unavailable: {problems[model]}"
                if model not in registry.measured:
                    return False, f"model {model} not loaded yet"
        return True, "ready"


class ServiceMetrics:
    """One service's tallies for the batch in hand, moved into Prometheus once per batch."""

    __slots__ = ("service", "metrics", "role", "shard", "group", "positions", "_routed", "_shadows", "_results",
                 "_dead", "_latencies", "_stage_children")

    def __init__(self, service: ServiceView, metrics: PipelineMetrics | None = None) -> None:
        self.service = service
        self.metrics = metrics
        self.role = service.role
        self.shard = getattr(service, "shard", "") or ""
        self.group = service.group_id
        self.positions: dict[Any, int] = {}
        """Next offset to process per partition, as of the last committed batch (for lag)."""
        self._routed: defaultdict[tuple, int] = defaultdict(int)
        self._shadows: defaultdict[tuple, int] = defaultdict(int)
        self._results: defaultdict[tuple, int] = defaultdict(int)
        self._dead: defaultdict[str, int] = defaultdict(int)
        self._latencies: defaultdict[tuple, list[float]] = defaultdict(list)
        self._stage_children = None if metrics is None else tuple(
            metrics.stage_seconds.labels(self.role, stage) for stage in ("handle", "settle", "commit"))

    # Hot path: plain dict arithmetic, no Prometheus call.

    def routed(self, objective: str, model: str, cell: str | None, traffic: str, shadows: Iterable[str]) -> None:
        """The router sent one request to a shard (and copies to ``shadows``)."""
        self._routed[(objective, model, cell or "", traffic)] += 1
        for candidate in shadows:
            self._shadows[(objective, candidate)] += 1

    def result(self, objective: str | None, model: str | None, status: str, total_ms: float | None = None,
               traffic: str = "live") -> None:
        """One result (or shadow-side record) queued; ``total_ms`` since the request's timestamp."""
        self._results[(objective or "", model or "", status)] += 1
        if total_ms is not None:
            self._latencies[(objective or "", model or "", traffic)].append(total_ms / 1000.0)

    def dead_letter(self, code: str) -> None:
        """One record dead-lettered with ``code``."""
        self._dead[code] += 1

    # Once per batch.

    def batch_done(self, batch: Batch, began: float, handled: float, settled: float) -> None:
        """The batch is committed: publish its tallies and stage times (``time.perf_counter`` marks)."""
        done = time.perf_counter()
        for tp, records in batch.items():
            self.positions[tp] = records[-1].offset + 1
        m, children = self.metrics, self._stage_children
        if m is not None and children is not None:
            size = sum(len(records) for records in batch.values())
            m.batches.labels(self.role, self.group).inc()
            m.records.labels(self.role, self.group).inc(size)
            m.batch_size.labels(self.role).observe(size)
            handle, settle, commit = children
            handle.observe(handled - began)
            settle.observe(settled - handled)
            commit.observe(done - settled)
            for key, n in self._routed.items():
                m.routed.labels(*key).inc(n)
            for key, n in self._shadows.items():
                m.shadow_copies.labels(*key).inc(n)
            for (objective, model, status), n in self._results.items():
                m.results.labels(self.role, self.shard, objective, model, status).inc(n)
            for code, n in self._dead.items():
                m.dead_letters.labels(self.role, code).inc(n)
            for (objective, model, traffic), values in self._latencies.items():
                _observe_many(m.latency.labels(self.role, objective, model, traffic), values)
        if tracing.enabled():
            tracing.batch_spans(self.role, batch, began, handled, settled, done)
        self._clear()

    def batch_failed(self) -> None:
        """The batch failed and will be replayed: forget what it tallied."""
        if self.metrics is not None:
            self.metrics.batch_failures.labels(self.role, self.group).inc()
        self._clear()

    def _clear(self) -> None:
        self._routed.clear()
        self._shadows.clear()
        self._results.clear()
        self._dead.clear()
        self._latencies.clear()


def _observe_many(child: Histogram, values: list[float]) -> None:
    """Observe a batch of values with one update per bucket instead of one ``observe`` per value."""
    buckets = getattr(child, "_buckets", None)
    bounds = getattr(child, "_upper_bounds", None)
    total = getattr(child, "_sum", None)
    if buckets is None or bounds is None or total is None:  # a prometheus_client without these internals
        for value in values:
            child.observe(value)
        return
    counts = [0] * len(bounds)
    for value in values:
        counts[bisect.bisect_left(bounds, value)] += 1
    for bucket, n in zip(buckets, counts):
        if n:
            bucket.inc(n)
    total.inc(sum(values))


def _shadow_models(rules) -> list[str]:
    return sorted({entry.model for objective in rules.objectives.values() for entry in objective.shadow})


class _LiveState(Collector):
    """Figures read from the running services at scrape time."""

    def __init__(self, metrics: PipelineMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # the families depend on what runs; never checked for name clashes up front

    def collect(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily("scoreline_consumer_lag_records",
                                "Records on the partition not yet processed (high watermark minus position).",
                                labels=["group", "topic", "partition"])
        assigned = GaugeMetricFamily("scoreline_assigned_partitions", "Partitions the role owns right now.",
                                     labels=["role", "group"])
        in_flight = GaugeMetricFamily("scoreline_work_in_flight_records",
                                      "Records the role has taken from Kafka and not committed yet (queued, being "
                                      "scored, or waiting for their output's acknowledgement).",
                                      labels=["role", "group"])
        for m in self.metrics.services:
            held = getattr(m.service, "in_flight", None)
            in_flight.add_metric([m.role, m.group], held() if held is not None else 0)
            consumer = m.service.consumer
            if consumer is None:
                assigned.add_metric([m.role, m.group], 0)
                continue
            owned = consumer.assignment()
            assigned.add_metric([m.role, m.group], len(owned))
            for tp in sorted(owned):
                behind = _lag(consumer, tp, m.positions.get(tp))
                if behind is not None:
                    lag.add_metric([m.group, tp.topic, str(tp.partition)], behind)
        yield lag
        yield assigned
        yield in_flight
        yield from _scoring_families(self.metrics.services)
        pipeline = self.metrics.pipeline
        if pipeline is None:
            return
        version = GaugeMetricFamily("scoreline_rules_version", "Version of the routing rules in force.")
        version.add_metric([], pipeline.rules().version)
        yield version
        loaded = GaugeMetricFamily("scoreline_model_loaded", "1 if the model is loaded, 0 if it failed to load.",
                                   labels=["model"])
        loads = CounterMetricFamily("scoreline_model_loads", "Model load attempts by outcome (a registry loads "
                                    "each model once and caches it, failures included).", labels=["model", "outcome"])
        outcomes: dict[tuple[str, str], int] = defaultdict(int)
        state: dict[str, int] = {}
        registries = {id(r): r for r in [pipeline.registry, *(getattr(m.service, "registry", None)
                                                             for m in self.metrics.services)] if r is not None}
        for registry in registries.values():
            for model in registry.loaded():
                outcomes[(model, "loaded")] += 1
                state[model] = 1
            for model in registry.problems():
                outcomes[(model, "failed")] += 1
                state.setdefault(model, 0)
        for model, value in sorted(state.items()):
            loaded.add_metric([model], value)
        for (model, outcome), n in sorted(outcomes.items()):
            loads.add_metric([model, outcome], n)
        yield loaded
        yield loads
        held = GaugeMetricFamily("scoreline_model_bytes", "Bytes the loaded models hold (arrays and ONNX files), "
                                 "against the memory budget.", labels=["kind"])
        events = CounterMetricFamily("scoreline_model_registry_events", "Model loads, load failures, evictions, "
                                     "and bypasses (loaded and served but not kept: the budget holds busier ones).",
                                     labels=["event"])
        seconds = HistogramMetricFamily("scoreline_model_load_seconds", "How long each model load took.")
        budget = sum(getattr(r, "memory_budget", None) or 0 for r in registries.values())
        held.add_metric(["held"], sum(r.bytes_held() for r in registries.values() if hasattr(r, "bytes_held")))
        if budget:
            held.add_metric(["budget"], budget)
        for event in ("loads", "failures", "evictions", "bypasses"):
            events.add_metric([event], sum(getattr(r, "counts", {}).get(event, 0) for r in registries.values()))
        by_bound = [sum(n) for n in zip(*(r.load_histogram for r in registries.values()
                                           if hasattr(r, "load_histogram")))] or [0] * (len(LOAD_BUCKETS_S) + 1)
        cumulative = list(itertools.accumulate(by_bound))
        seconds.add_metric([], [(str(b), n) for b, n in zip((*LOAD_BUCKETS_S, "+Inf"), cumulative)],
                           sum_value=sum(getattr(r, "load_seconds", 0.0) for r in registries.values()))
        measured = GaugeMetricFamily("scoreline_model_measured_bytes", "What each model held when it last loaded "
                                     "(kept after eviction; scoreline placement plan reads it).", labels=["model"])
        sizes: dict[str, int] = {}
        for registry in registries.values():
            sizes.update(getattr(registry, "measured", {}))
        for model, size in sorted(sizes.items()):
            measured.add_metric([model], size)
        yield held
        yield events
        yield seconds
        yield measured
        yield from _rollout_families(pipeline.services)
        yield from loop_lag_families(getattr(pipeline, "loop_lags", ()))


def _scoring_families(services: Iterable[ServiceMetrics]) -> Iterator[Metric]:
    """The workers' batchers and scoring threads (``Worker.scoring_figures``), read at scrape time."""
    workers = [m for m in services if callable(getattr(m.service, "scoring_figures", None))]
    if not workers:
        return
    labels = ["role", "model"]
    queued = GaugeMetricFamily("scoreline_scoring_queue_requests", "Requests waiting for their model's next call.",
                               labels=labels)
    in_flight = GaugeMetricFamily("scoreline_scoring_calls_in_flight", "Workflow calls running now (one per model "
                                  "at most).", labels=labels)
    waits = HistogramMetricFamily("scoreline_scoring_queue_wait_seconds", "How long requests queued before their "
                                  "model's call started.", labels=labels)
    costs = HistogramMetricFamily("scoreline_scoring_batch_cost", "What each workflow call cost (items, or what "
                                  "the model's serving.batch_cost counts).", labels=labels)
    timeouts = CounterMetricFamily("scoreline_workflow_timeouts", "Requests answered workflow_timeout: their "
                                   "model's call ran past serving.time_limit_ms.", labels=labels)
    threads = GaugeMetricFamily("scoreline_scoring_threads", "Threads that run workflow calls.", labels=["executor"])
    busy = CounterMetricFamily("scoreline_scoring_busy_seconds", "Thread seconds spent in workflow calls.",
                               labels=["executor"])
    executors: dict[int, Any] = {}
    for m in workers:
        for figure in getattr(m.service, "scoring_figures")():  # noqa: B009 - not every service view has it
            key = [m.role, figure["model"]]
            queued.add_metric(key, figure["queued"])
            in_flight.add_metric(key, figure["in_flight"])
            for family, hist in ((waits, figure["waits"]), (costs, figure["costs"])):
                cumulative = list(itertools.accumulate(hist.counts))
                family.add_metric(key, [(str(b), n) for b, n in zip((*hist.bounds, "+Inf"), cumulative)],
                                  sum_value=hist.sum)
            timeouts.add_metric(key, figure["timeouts"])
        executor = getattr(m.service, "executor", None)
        if executor is not None:
            executors[id(executor)] = executor
    for executor in executors.values():
        threads.add_metric([executor.name], executor.threads)
        busy.add_metric([executor.name], executor.busy_seconds)
    yield from (queued, in_flight, waits, costs, timeouts, threads, busy)


def _rollout_families(services: Any) -> Iterator[Metric]:
    """The rollout controller's figures, from any role that has them (``rollout_figures()``)."""
    controllers = [s for s in services if callable(getattr(s, "rollout_figures", None))]
    if not controllers:
        return
    lease = GaugeMetricFamily("scoreline_rollout_controller_active", "1 if this process is the active rollout "
                              "controller (holds the rollouts partition), 0 if it stands by.")
    percent = GaugeMetricFamily("scoreline_rollout_percent", "Each objective's latest rollout: the candidate's "
                                "share of traffic in percent, by state (reported by the active controller).",
                                labels=["objective", "candidate", "state"])
    for controller in controllers:
        lease.add_metric([], 1 if controller.active else 0)
        for objective, candidate, state, share in controller.rollout_figures():
            percent.add_metric([objective, candidate, state], share)
    yield lease
    yield percent


def _lag(consumer: Consumer, tp: Any, position: int | None) -> int | None:
    highwater = consumer.highwater(tp)
    if highwater is None:
        return None
    if position is None:
        # Nothing processed here yet: fall back to the consumer's fetch position, if it has one.
        position = consumer.position_hint(tp)
    return None if position is None else max(0, highwater - position)
