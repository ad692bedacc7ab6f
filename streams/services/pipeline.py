"""All of scoreline's roles in one process, or any subset of them: the thing ``scoreline run`` runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from routing import Rules
from schemas import codec
from streams.facts.topic import worker_fact_source
from streams.ops.http import MetricsServer
from streams.ops.loop_lag import LoopLag
from streams.ops.metrics import PipelineMetrics
from streams.repository import ModelRepository
from streams.rollouts.controller import RolloutController
from streams.rules.holder import RulesHolder
from streams.rules.publisher import RulesWatcher
from streams.scoring import ScoringExecutor, default_threads
from streams.services.batch import BatchService
from streams.services.comparator import Comparator
from streams.services.router import Router
from streams.services.worker import ShadowWorker, Worker
from streams.topics import TopicLayout
from streams.transport.admin import ensure_topics
from streams.transport.settings import KafkaSettings
from workflows import ModelRegistry

__all__ = ["Pipeline", "PipelineOptions", "ROLES", "SIDE_ROLES", "SideLoop"]

log = logging.getLogger(__name__)


ROLES = ("router", "worker", "shadow", "comparator", "rollout")

SIDE_ROLES = ("shadow", "comparator", "rollout")
"""Roles no client waits on: with ``PipelineOptions.side_loop`` they run on an event loop of their own."""


@dataclass(frozen=True)
class PipelineOptions:
    """Which roles run here, and how."""

    roles: Sequence[str] = ROLES
    """Roles to run in this process: any of ``router``, ``worker``, ``shadow``, ``comparator``, ``rollout``
    (the rollout controller: one is active per topic prefix, any others stand by)."""
    shards: Sequence[str] | None = None
    """Shards whose workers run here; None means every shard in the rules."""
    max_request_bytes: int = codec.DEFAULT_MAX_REQUEST_BYTES
    """Requests larger than this are rejected with ``payload_too_large``."""
    group_suffix: str = ""
    """Appended to consumer group ids (tests run isolated pipelines side by side)."""
    create_topics: bool = True
    """Create missing topics on start."""
    workers_per_shard: int = 1
    """Worker instances per shard in this process (they share the shard's partitions)."""
    fact_source: str = "files"
    """Where workers find facts: ``files`` (the registry's in-memory store) or ``kafka`` (each worker
    materialises the fact-topic partitions it owns and scores only once they are loaded)."""
    follow_rules: bool = True
    """Follow the rules topic: the newest valid published version replaces the given rules (hot reload)."""
    metrics_port: int | None = None
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on this port (None or 0: don't serve)."""
    client_topics: bool = True
    """Create each client's own request topics (``<prefix>requests.<client>``), where the topic is the identity."""
    trust_client_field: bool = True
    """Whether requests on the shared request topics may name their own client. Turn off once every client
    publishes to its own topic under Kafka ACLs (docs/security.md)."""
    scoring_threads: int | None = None
    """Threads this process's workers run workflow calls on, shared by them (None: ``$SCORELINE_SCORING_THREADS``,
    else one per core this process may use). The event loop only moves records."""
    model_cache: Path | None = None
    """Workers pull models that the local models directory lacks from the model repository topic into this
    cache (``scoreline models publish``); None: serve only what is on disk."""
    side_loop: bool = False
    """Run the roles no client waits on (:data:`SIDE_ROLES`: the shadow worker, the comparator, the rollout
    controller) on an event loop of their own, on a thread of their own, so the live path's loop (router and
    workers) never runs their callbacks: a live record never waits behind a shadow batch, a comparator join
    or a controller poll. ``scoreline run`` turns it on; the roles share the process, its scoring threads and
    the interpreter lock, not the loop."""


class Pipeline:
    """Starts the configured roles, keeps them running, stops them in order."""

    def __init__(self, kafka: KafkaSettings, layout: TopicLayout, rules: Rules | RulesHolder,
                 registry: ModelRegistry, options: PipelineOptions = PipelineOptions()) -> None:
        self.kafka = kafka
        self.layout = layout
        self.rules = rules if isinstance(rules, RulesHolder) else RulesHolder(rules)
        self.registry = registry
        self.options = options
        self.services: list[BatchService] = []
        self.watcher: RulesWatcher | None = None
        self.metrics = PipelineMetrics(self)
        """This pipeline's Prometheus metrics, in a registry of its own."""
        self.metrics_server: MetricsServer | None = None
        """The HTTP port serving them, when ``metrics_port`` asks for one."""
        self.executor: ScoringExecutor | None = None
        """The scoring threads the workers of this process share (made on start when a worker role runs)."""
        self.repository = self._repository()
        """The model repository the workers pull from (one per loop: one read of the topic serves its roles)."""
        self.side: SideLoop | None = None
        """The side roles' own loop, with ``side_loop`` (made on start when a side role runs here)."""
        self._side_services: list[BatchService] = []
        self.loop_lags: list[LoopLag] = []
        """How late each of this pipeline's loops runs what is ready (``streams.ops.loop_lag``), while it runs."""

    async def __aenter__(self) -> Pipeline:
        await self.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.stop()

    def _group(self, name: str) -> str:
        return f"{self.layout.prefix}{name}{self.options.group_suffix}"

    async def start(self) -> None:
        """Create topics if asked, follow the rules topic if asked, then start every role."""
        if self.options.follow_rules:
            # Before the roles, so they start on the version in force on the cluster, not the fallback.
            if self.options.create_topics:
                rules_topic = [s for s in self.layout.specs(()) if s.name == self.layout.rules]
                await ensure_topics(self.kafka.bootstrap, rules_topic,
                                    replication_factor=self.layout.replication_factor, **self.kafka.security)
            self.watcher = RulesWatcher(self.kafka, self.layout, self.rules)
            await self.watcher.start()
        rules = self.rules()
        shards = list(self.options.shards or rules.shards)
        if self.options.create_topics:
            reply_topics = sorted({t for c in rules.clients.values() for t in c.reply_topics if not t.endswith("*")})
            clients = sorted(rules.clients) if self.options.client_topics else []
            await ensure_topics(self.kafka.bootstrap, self.layout.specs(rules.shards, reply_topics, clients),
                                replication_factor=self.layout.replication_factor, **self.kafka.security)
        roles = set(self.options.roles)
        if roles & {"worker", "shadow"}:
            self.executor = ScoringExecutor(self.options.scoring_threads or default_threads())
        self._live_roles(roles, shards)
        side = roles & set(SIDE_ROLES)
        if side and self.options.side_loop:
            self.side = SideLoop()
            # Built on their loop: aiokafka clients bind to the loop running when they are made.
            self._side_services = await self.side.run(self._side_roles, side, self._repository())
        else:
            self._side_services = self._side_roles(side, self.repository)
        self.services.extend(self._side_services)
        self.metrics.bind()
        self.loop_lags = [LoopLag("live")]
        self.loop_lags[0].start()
        if self.side is not None:
            self.loop_lags.append(LoopLag("side"))
            await self.side.run(self.loop_lags[1].start)
        await self._serve_metrics(self.options.metrics_port)
        await asyncio.gather(*(self._on_its_loop(s, s.start) for s in self.services))

    def _repository(self) -> ModelRepository | None:
        options = self.options
        return ModelRepository(self.kafka, self.layout, cache_dir=options.model_cache) \
            if options.model_cache is not None else None

    async def _on_its_loop(self, service: BatchService, call: Callable[[], Awaitable[None]]) -> None:
        """``call()`` on the loop ``service`` runs on: this one, or the side roles' own."""
        if self.side is not None and service in self._side_services:
            await self.side.run(call)
        else:
            await call()

    def _live_roles(self, roles: set[str], shards: list[str]) -> None:
        """The router and the shard workers: the roles a client waits on."""
        if "router" in roles:
            self.services.append(Router(self.kafka, self.layout, self.rules, group_id=self._group("router"),
                                        max_request_bytes=self.options.max_request_bytes,
                                        trust_client_field=self.options.trust_client_field,
                                        worker_group=lambda shard: self._group(
                                            "shadow" if shard == "shadow" else f"worker.{shard}")))
        if "worker" in roles:
            for shard in shards:
                for _ in range(self.options.workers_per_shard):
                    self.services.append(Worker(self.kafka, self.layout, shard=shard,
                                                group_id=self._group(f"worker.{shard}"), **self._facts()))

    def _side_roles(self, roles: set[str], repository: ModelRepository | None) -> list[BatchService]:
        """The shadow worker, the comparator and the rollout controller that ``roles`` asks for."""
        services: list[BatchService] = []
        if "shadow" in roles:
            services.append(ShadowWorker(self.kafka, self.layout, group_id=self._group("shadow"),
                                         **{**self._facts(), "repository": repository}))
        if "comparator" in roles:
            services.append(Comparator(self.kafka, self.layout,  # type: ignore[arg-type]
                                       app_id=self._group("comparator")))
        if "rollout" in roles:
            services.append(RolloutController(self.kafka, self.layout, self.rules,  # type: ignore[arg-type]
                                              group_id=self._group("rollout")))
        return services

    async def _serve_metrics(self, port: int | None, host: str = "0.0.0.0") -> None:
        """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``port`` (None or 0: don't)."""
        if not port:
            return
        self.metrics_server = MetricsServer(self.metrics, port=port, host=host)
        await self.metrics_server.start()
        log.info("metrics on http://%s:%d/metrics", host, self.metrics_server.port)

    def _facts(self) -> dict:
        """A worker's registry (and, with Kafka facts, its own store and the materialiser that fills it)."""
        if self.options.fact_source == "files":
            return {"registry": self.registry, "repository": self.repository, "rules": self.rules,
                    "executor": self.executor}
        if self.options.fact_source != "kafka":
            raise ValueError(f"fact_source must be 'files' or 'kafka', got {self.options.fact_source!r}")
        registry, facts = worker_fact_source(self.kafka, self.layout, self.registry)
        return {"registry": registry, "facts": facts, "repository": self.repository, "rules": self.rules,
                "executor": self.executor}

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Return once every role has partitions assigned."""
        await asyncio.gather(*(self._on_its_loop(s, lambda s=s: s.wait_assigned(timeout))  # type: ignore[misc]
                               for s in self.services))

    async def stop(self) -> None:
        """Stop every role; each finishes and commits the batch in hand."""
        for service in reversed(self.services):
            with contextlib.suppress(Exception):
                await self._on_its_loop(service, service.stop)
        self.services.clear()
        self._side_services.clear()
        if self.loop_lags:
            await self.loop_lags[0].stop()
            if self.side is not None and len(self.loop_lags) > 1:
                await self.side.run(self.loop_lags[1].stop)
            self.loop_lags = []
        if self.side is not None:
            self.side.close()
            self.side = None
        if self.executor is not None:
            self.executor.close()
            self.executor = None
        if self.metrics_server is not None:
            await self.metrics_server.stop()
            self.metrics_server = None
        if self.watcher is not None:
            await self.watcher.stop()
            self.watcher = None

    def stats(self) -> dict:
        """Counters per role, for logs and the demo summary."""
        return {s.role + (f".{getattr(s, 'shard', '')}" if s.role == "worker" else ""): {
            "batches": s.batches, "records": s.records, "dead_letters": s.dead_letters}
            for s in self.services}


class SideLoop:
    """An event loop running on a thread of its own, for the roles no client waits on."""

    def __init__(self, name: str = "scoreline-side-roles") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def run(self, call: Callable[..., Any], *args: object) -> Any:
        """``call(*args)`` on this loop (awaited there if it is a coroutine function); its value, here."""
        async def there() -> Any:
            value = call(*args)
            return await value if asyncio.iscoroutine(value) else value

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(there(), self.loop))

    def tasks(self) -> set[asyncio.Task]:
        """The tasks on this loop now (for tests and diagnostics)."""
        return asyncio.all_tasks(self.loop)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the loop once what it runs now yields, and wait for its thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.loop.close()
