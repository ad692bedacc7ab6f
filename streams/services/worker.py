"""Workflow workers: routed work in, one result per request out.

A shard worker consumes its shard's live and backfill work topics, scores each batch with
one workflow call per model (on the scoring threads of ``streams.scoring``, never on the event
loop; the models of one batch side by side, each bounded by its manifest's time limit), replies on
each request's ``reply_to`` and, for shadowed requests, records the primary side on
``shadow-results``. A shadow worker consumes the shadow topic in a consumer group of its own
(shadow load never slows live work), scores the candidate model, records the shadow side, and
never replies to a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from routing.route import scalar_str
from schemas import codec
from schemas import headers as H
from schemas.errors import ErrorCode, InvalidMessage, ScorelineError
from schemas.json_body import partial_of_request
from schemas.messages import ErrorInfo, Request, Result, Role, ShadowResult, Stage, Status, Traffic
from streams.ops.tracing import trace_headers
from streams.scoring import ScoringExecutor
from streams.scoring.batcher import Lanes
from streams.scoring.processes import BrokenProcessPool
from streams.services.batch import BatchService
from streams.services.loading import ModelLoads
from streams.services.waiting import WaitingRoom
from streams.topics import TopicLayout
from streams.transport.headers import headers_of
from streams.transport.outbox import Outbox
from streams.transport.protocols import Batch, Record, TopicPartition, Transport
from streams.transport.settings import KafkaSettings
from workflows import Item, Model, ModelRegistry, ModelUnavailable, Outcome
from workflows.packaging import ServingSpec

if TYPE_CHECKING:
    from routing import Rules
    from streams.facts.topic import FactTopicMaterialiser
    from streams.repository import ModelRepository
    from streams.rules.holder import RulesHolder

__all__ = ["Worker", "ShadowWorker"]

log = logging.getLogger(__name__)

LOAD_WAIT_S = 30.0
"""How long a request without a deadline waits for its model to load (``Worker.load_wait_s``)."""
INLINE_WAIT_S = 0.05
"""How long a batch waits for the calls it started before it is sent without the slower ones' answers."""
RULES_CHECK_S = 0.25
"""How often a worker looks for a new rules version to preload the models of."""

SLICE_FIELDS = ("country", "device", "surface")

# (header name, request attribute): the router routed by the header, the worker scores the body,
# so the two must agree or a client could be routed as one tenant/objective and scored as another.
_AGREEMENT = ((H.REQUEST_ID, "request_id"), (H.OBJECTIVE, "objective"), (H.CLIENT, "client"),
              (H.REPLY_TO, "reply_to"))
# (context field, header name): the router may route context-matched objectives by these headers.
_CONTEXT_AGREEMENT = tuple(H.CONTEXT_HEADERS.items())


class Work(NamedTuple):
    """One routed request, decoded and checked, ready to score."""

    record: Record
    headers: dict[str, str]
    request: Request


def _position(work: Work) -> tuple[TopicPartition, int]:
    """Where a request's record is: its partition and offset."""
    record = work.record
    return TopicPartition(record.topic, record.partition), record.offset


class Worker(BatchService):
    """Scores one shard's work topics (live first; backfill in the room live leaves, see ``BatchService._poll``)."""

    role = "worker"
    stage = Stage.WORKER
    replies = True
    """Whether this worker answers clients (a shadow worker never does)."""

    def __init__(self, kafka: KafkaSettings, layout: TopicLayout, registry: ModelRegistry, *, shard: str,
                 group_id: str | None = None,
                 facts: FactTopicMaterialiser | None = None, transport: Transport | None = None,
                 repository: ModelRepository | None = None, rules: RulesHolder | None = None,
                 executor: ScoringExecutor | None = None) -> None:
        super().__init__(kafka, layout, group_id=group_id or layout.worker_group(shard),
                         topics=self._topics(layout, shard), transport=transport)
        self._own_executor = executor is None
        self.executor = executor if executor is not None else ScoringExecutor(name=f"scoreline-{self.role}-scoring")
        """Where workflow calls run (shared by the workers of a process; a worker given none has its own)."""
        self.timeouts = 0
        """Requests answered ``workflow_timeout`` (their model's call ran past its time limit)."""
        self.repository = repository
        """Where models that no local directory holds are pulled from (``streams.repository``), if anywhere."""
        self.shard = shard
        self.registry = registry
        self.facts = facts
        """With Kafka facts: the materialiser filling ``registry``'s store from the partitions this worker owns."""
        self.results: defaultdict[str, int] = defaultdict(int)
        self.rules = rules
        """With rules: each version that comes into force has its models for this shard loaded in the background."""
        self._waiting: WaitingRoom[Work] = WaitingRoom(LOAD_WAIT_S)
        """Requests waiting for their model to load (``load_wait_s`` at most, or until their deadline)."""
        self._loads = ModelLoads(registry, repository, role=self.role, waiting=self._waiting.count)
        self._preloading: asyncio.Task[None] | None = None
        self._lanes: Lanes[Work, tuple[list[Outcome], float]] = Lanes(
            self._serving, payload_of=lambda w: w.request.payload, deadline_of=lambda w: w.request.deadline_ms,
            threads=self.executor.threads, position_of=_position)
        """Each model's queue and its one call in flight: the dynamic batcher (``streams.scoring.batcher``)."""
        self._on_threads: set[str] = set()
        """Models that asked for a scoring process but run on the threads (their facts are not files)."""
        self.load_waits = 0
        """Requests that had to wait for their model to be pulled or loaded (the rest found it loaded)."""

    @staticmethod
    def _topics(layout: TopicLayout, shard: str) -> list[str]:
        return [layout.shard(shard), layout.shard(shard, Traffic.BACKFILL)]

    async def start(self) -> None:
        """Start the fact materialiser (if any), then consume."""
        self.executor.users.add(id(self))
        if self.facts is not None:
            await self.facts.start()
        await super().start()
        if self.rules is not None:
            self._preloading = asyncio.create_task(self._follow_rules(), name=f"scoreline-{self.role}-preload")

    async def stop(self) -> None:
        """Finish the batch in hand, then stop following facts (requests still waiting for a load are replayed)."""
        if self._preloading is not None:
            self._preloading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._preloading
        await super().stop()
        self.executor.users.discard(id(self))
        self._loads.cancel()
        self._lanes.cancel()  # never answered, never committed: replayed by the next owner
        if self._own_executor:
            self.executor.close()
        if self.facts is not None:
            await self.facts.stop()

    async def wait_assigned(self, timeout: float = 30.0) -> None:
        """Return once partitions are assigned and, with Kafka facts, their facts loaded."""
        await super().wait_assigned(timeout)
        await self._follow_facts({})

    async def _follow_facts(self, batch: Batch) -> None:
        """Kafka facts: never score before the facts of the owned partitions are loaded."""
        if self.facts is not None and self.consumer is not None:
            # Co-partitioning: fact partition p holds the users whose work arrives on shard partition p.
            await self.facts.follow({tp.partition for tp in (*self.consumer.assignment(), *batch)})

    async def handle(self, batch: Batch, outbox: Outbox) -> None:
        await self._follow_facts(batch)
        now_ms = time.time() * 1000
        by_model: dict[str, list[Work]] = defaultdict(list)
        # Live partitions first: within a batch, live requests are scored and sent before backfill.
        # Decoding and emitting are plain calls, not coroutines: nothing per record awaits unless a
        # record is rejected or its client asked for a reply partition.
        if self._waiting:
            await self._unpark(by_model, outbox)
        if self._lanes:
            await self._finish_calls(outbox)
        for tp in sorted(batch, key=lambda tp: tp.topic.endswith(".backfill")):
            for record in batch[tp]:
                headers = headers_of(record.headers)
                try:
                    work = self._decode(record, headers)
                except InvalidMessage as exc:
                    await self._reject(record, headers, exc, outbox)
                    continue
                deadline = work.request.deadline_ms
                if deadline is not None and deadline < now_ms:
                    await self._expire(outbox, work, f"deadline {deadline} passed before scoring")
                    continue
                by_model[self._model_of(work)].append(work)
        for model_id in [m for m in by_model if not self._loads.ready(m)]:
            # Still loading: these wait (held back from the commit), the other models' requests flow on.
            self.load_waits += len(by_model[model_id])
            now = time.monotonic()
            for work in by_model.pop(model_id):
                record = work.record
                self._waiting.park(model_id, work, TopicPartition(record.topic, record.partition), record.offset,
                                   work.request.deadline_ms, now=now, now_ms=now_ms)
        now = time.monotonic()
        for model_id, works in by_model.items():
            self._lanes.add(model_id, works, now)
        started = await self._start_due(outbox)
        if started:
            # A model that scores within the patience is answered with this batch; a slower one is answered by
            # a later batch when it returns (held back from the commit until then), and holds no other model.
            await asyncio.wait(started, timeout=INLINE_WAIT_S)
        if self._lanes:
            await self._finish_calls(outbox)
        if self._loads:
            self._loads.forget_finished(self._waiting)

    @property
    def load_wait_s(self) -> float:
        """How long a request without a deadline waits for its model to load before it gets ``model_unavailable``."""
        return self._waiting.wait_s

    @load_wait_s.setter
    def load_wait_s(self, seconds: float) -> None:
        self._waiting.wait_s = seconds

    def held(self) -> dict[TopicPartition, int]:
        """The lowest offset per partition of a request not answered yet: waiting for its model to load, being
        scored, or queued behind its model's call in flight."""
        held = self._waiting.held()
        for where, offset in self._lanes.lowest().items():
            tp = cast(TopicPartition, where)
            if offset < held.get(tp, offset + 1):
                held[tp] = offset
        return held

    def _idle_ms(self) -> int:
        """A batch waiting for a fuller one (``serving.max_queue_delay_us``) wakes the loop when it is due."""
        idle = super()._idle_ms()
        due = self._lanes.next_due(time.monotonic(), time.time() * 1000) if self._lanes else None
        return idle if due is None else max(1, min(idle, int(due * 1000) + 1))

    def scoring_figures(self) -> list[dict[str, Any]]:
        """Per model, for the metrics: requests queued, calls in flight, queue waits, call costs, timeouts."""
        return [{"model": model_id, "queued": len(lane.queue), "in_flight": len(lane.calls_in_flight),
                 "waits": lane.waits, "costs": lane.costs, "timeouts": lane.timeouts}
                for model_id, lane in sorted(self._lanes.lanes.items())]

    def _serving(self, model_id: str) -> ServingSpec:
        """The model's ``serving`` spec (its manifest is read once and cached), else the defaults."""
        try:
            return self.registry.manifest(model_id).serving
        except ModelUnavailable:
            return ServingSpec()  # scoring will say why it is unavailable

    async def _start_due(self, outbox: Outbox) -> list[asyncio.Task[tuple[list[Outcome], float]]]:
        """Answer the queued requests whose deadline passed; start every model's batch that is due."""
        now_ms = time.time() * 1000
        for model_id, work in self._lanes.expired(now_ms):
            await self._expire(outbox, work, f"deadline {work.request.deadline_ms} passed while queued for "
                                             f"{model_id}")
        return self._lanes.start_due(self._start_call, time.monotonic(), now_ms)

    def _start_call(self, model_id: str, works: list[Work]) -> asyncio.Task[tuple[list[Outcome], float]]:
        """Score ``works`` with ``model_id`` on the scoring threads; the task is this model's call in flight.

        When it returns, the model's next batch starts at once (its answers go out with the next batch the loop
        handles): the scoring thread never waits for the loop's next poll while requests queue.
        """
        task = asyncio.create_task(self._score_off_loop(model_id, works), name=f"scoreline-{self.role}-{model_id}")
        task.add_done_callback(self._call_returned)
        return task

    def _call_returned(self, _: asyncio.Task[tuple[list[Outcome], float]]) -> None:
        if not self._stopping.is_set():
            self._lanes.start_due(self._start_call, time.monotonic(), time.time() * 1000, unexpired_only=True)

    async def _finish_calls(self, outbox: Outbox) -> None:
        """Answer the requests of every call that returned; start the batches that are due now."""
        for model_id, works, task in self._lanes.returned():
            try:
                outcomes, scored_ms = task.result()
            except Exception as exc:  # noqa: BLE001 - a bug around the call: every request still gets its answer
                log.exception("%s: scoring %s failed", self.role, model_id)
                outcomes, scored_ms = [Outcome(None, ErrorInfo(ErrorCode.WORKFLOW_ERROR, f"{model_id} failed: "
                                                               f"{type(exc).__name__}: {exc}"))] * len(works), 0.0
            self._lanes.lane(model_id).observe(scored_ms)
            for work, outcome in zip(works, outcomes):
                self._emit(outbox, work, model_id, outcome, scored_ms=scored_ms,
                           partition=await self._reply_partition(work) if H.REPLY_PARTITION in work.headers else None)
                if outcome.error is not None and outcome.error.code in _DEAD_LETTERED:
                    await self.dead_letter(outbox, work.record, InvalidMessage(
                        outcome.error.code, outcome.error.message, partial=partial_of_request(work.request)))
        await self._start_due(outbox)

    async def _unpark(self, by_model: dict[str, list[Work]], outbox: Outbox) -> None:
        """Requests whose model is ready go to ``by_model``; past their deadline or the wait, they get an error."""
        owned = self.consumer.assignment() if self.consumer is not None else set()
        go, overdue = self._waiting.release(self._loads.done, owned, now=time.monotonic())
        for model_id, works in go.items():
            by_model[model_id].extend(works)
        for model_id, work, expired in overdue:
            if expired:
                await self._expire(outbox, work, f"deadline {work.request.deadline_ms} passed while model "
                                                 f"{model_id} loaded")
                continue
            self._emit(outbox, work, model_id, Outcome(None, ErrorInfo(
                ErrorCode.MODEL_UNAVAILABLE, f"model {model_id!r} unavailable: still loading after "
                f"{self._waiting.wait_s:g} s")), scored_ms=0.0, partition=await self._reply_partition(work))

    async def _expire(self, outbox: Outbox, work: Work, message: str) -> None:
        self._emit(outbox, work, self._model_of(work), Outcome(None, ErrorInfo(
            ErrorCode.DEADLINE_EXPIRED, message, "deadline_ms")), scored_ms=0.0, status=Status.EXPIRED,
            partition=await self._reply_partition(work))

    async def _follow_rules(self) -> None:
        """Load, in the background, the models each new rules version places here (as the budget allows)."""
        assert self.rules is not None
        version: int | None = None
        while True:
            # Once partitions are assigned and their facts loaded (with Kafka facts): a model that
            # checks its facts while they are still arriving would fail, and wait for its retry.
            if self.rules.version != version and self.consumer is not None and self.consumer.assignment():
                version = self.rules.version
                await self._follow_facts({})
                await self._loads.preload(self._placed(self.rules()))
            # One model placed here and no other worker on these threads: it may have every thread.
            self._lanes.set_alone(len(self._placed(self.rules())) == 1 and self.executor.users == {id(self)})
            await asyncio.sleep(RULES_CHECK_S)

    def _placed(self, rules: Rules) -> tuple[str, ...]:
        return rules.models_on(self.shard)

    def _model_of(self, work: Work) -> str:
        return work.headers.get(H.MODEL) or ""

    def _decode(self, record: Record, headers: dict[str, str]) -> Work:
        """The routed request, checked against the headers it was routed by; raises ``InvalidMessage``."""
        request = codec.decode_request(record.value or b"", max_bytes=1 << 62)  # size checked by the router
        if (headers.get(H.REQUEST_ID), headers.get(H.OBJECTIVE), headers.get(H.CLIENT),
                headers.get(H.REPLY_TO)) != (request.request_id, request.objective, request.client, request.reply_to):
            _check_agreement(headers, request)  # the routed case has all four, equal: one comparison
        for field, header in _CONTEXT_AGREEMENT:
            said = headers.get(header)
            if said is not None and said != scalar_str(request.context.get(field)):
                raise InvalidMessage(ErrorCode.HEADER_MISMATCH,
                                     f"header {header} says {said!r} but the body's context.{field} is "
                                     f"{request.context.get(field)!r}", field=f"context.{field}")
        override = headers.get(H.MODEL_OVERRIDE)
        if request.model is not None and override != request.model:
            raise InvalidMessage(ErrorCode.HEADER_MISMATCH,
                                 f"the body overrides the model with {request.model!r} but the headers "
                                 f"say {override!r}", field="model")
        return Work(record, headers, request)

    async def _reply_partition(self, work: Work) -> int | None:
        """The reply partition the client asked for, if it asked and this worker replies at all."""
        return await self.reply_partition(work.request.reply_to, work.headers) if self.replies else None

    async def _reject(self, record: Record, headers: dict[str, str], exc: InvalidMessage,
                      outbox: Outbox) -> None:
        """Dead-letter the record; reply with the error on the reply topic the router checked."""
        await self.dead_letter(outbox, record, exc)
        request_id, reply_to = headers.get(H.REQUEST_ID), headers.get(H.REPLY_TO)
        if self.replies and request_id and reply_to:
            result = Result(request_id=request_id, objective=headers.get(H.OBJECTIVE), status=Status.ERROR,
                            error=exc.to_error_info(), rules_version=_int(headers.get(H.RULES_VERSION)),
                            shard=headers.get(H.SHARD), model=headers.get(H.MODEL),
                            traffic=headers.get(H.TRAFFIC, Traffic.LIVE))
            await outbox.add(reply_to, codec.encode(result), key=request_id.encode(),
                             partition=await self.reply_partition(reply_to, headers), headers=trace_headers(headers))
            self.results[Status.ERROR] += 1
            self.metrics.result(headers.get(H.OBJECTIVE), headers.get(H.MODEL), Status.ERROR)

    async def _score_off_loop(self, model_id: str, works: list[Work]) -> tuple[list[Outcome], float]:
        """:meth:`_score` on a scoring thread, bounded by the model's time limit; the outcomes and the milliseconds.

        Past the limit every item gets ``workflow_timeout`` and the worker goes on (the call itself runs on,
        on a thread the executor replaces): the loop keeps fetching, committing and heartbeating meanwhile.
        """
        limit_ms = self._lanes.lane(model_id).spec.time_limit_ms
        began = time.perf_counter()
        call = self.executor.submit(self._score, model_id, works)
        try:
            outcomes = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(call)), limit_ms / 1000)
        except TimeoutError:
            self.executor.abandon(call)
            call.add_done_callback(_forget)  # it may still fail later: nobody waits for it any more
            self.timeouts += len(works)
            self._lanes.lane(model_id).timeouts += len(works)
            log.error("%s: %s ran past its time limit of %d ms on a batch of %d; answering workflow_timeout",
                      self.role, model_id, limit_ms, len(works))
            error = ErrorInfo(ErrorCode.WORKFLOW_TIMEOUT, f"{model_id} ran past its time limit of {limit_ms} ms "
                                                          f"(serving.time_limit_ms) on a batch of {len(works)}")
            outcomes = [Outcome(None, error)] * len(works)
        return outcomes, (time.perf_counter() - began) * 1000

    def _score(self, model_id: str, works: list[Work]) -> list[Outcome]:
        """One workflow call for the batch; if it raises, score one by one to isolate the poison.

        Runs on a scoring thread: the registry's load (a model evicted since it was ready) happens here too,
        never on the event loop.
        """
        try:
            fresh = self._loads.take(model_id)
            model = fresh if fresh is not None else self.registry.get(model_id, uses=len(works))
        except ScorelineError as exc:
            error = ErrorInfo(exc.code or ErrorCode.MODEL_UNAVAILABLE, f"model {model_id!r} unavailable: {exc}")
            return [Outcome(None, error)] * len(works)
        items = [Item(w.request.context, w.request.payload) for w in works]
        if self._lanes.lane(model_id).spec.executor == "processes":
            in_child = self._score_in_process(model_id, model, items)
            if in_child is not None:
                return in_child
        try:
            return model.score_batch(items)
        except Exception:
            log.warning("%s: %s failed on a batch of %d; isolating", self.role, model_id, len(items), exc_info=True)
        outcomes = []
        for item in items:
            try:
                outcomes.extend(model.score_batch([item]))
            except Exception as exc:  # noqa: BLE001 - the poison request: an error result and a dead letter, never a crash
                outcomes.append(Outcome(None, ErrorInfo(ErrorCode.WORKFLOW_ERROR,
                                                        f"{model_id} failed: {type(exc).__name__}: {exc}")))
        return outcomes

    def _score_in_process(self, model_id: str, model: Model, items: list[Item]) -> list[Outcome] | None:
        """On a scoring thread: the call in a scoring process (``serving.executor: "processes"``); None where it
        cannot run there (facts that are not files), so it runs on this thread instead."""
        facts = self.registry.facts
        source = getattr(facts, "source", None)
        if model.manifest.facts and source is None:
            if model_id not in self._on_threads:
                self._on_threads.add(model_id)
                log.warning("%s: %s asks for a scoring process, but its facts are not read from files; "
                            "it runs on the scoring threads", self.role, model_id)
            return None
        processes = self.executor.processes
        sha = getattr(model, "sha256", None) or ""
        try:
            future = processes.submit(str(self.registry.directory(model_id)), sha,
                                      str(source) if source is not None else None,
                                      [(item.context, item.payload) for item in items])
            return future.result()
        except BrokenProcessPool:
            processes.broken()
            error = ErrorInfo(ErrorCode.WORKFLOW_ERROR, f"{model_id} failed: its scoring process died")
            return [Outcome(None, error)] * len(items)

    def _emit(self, outbox: Outbox, work: Work, model_id: str, outcome: Outcome, *, scored_ms: float,
              status: str | None = None, partition: int | None = None) -> None:
        request, headers, record = work.request, work.headers, work.record
        status = status or (Status.OK if outcome.error is None else Status.ERROR)
        now_ms = time.time() * 1000
        routed_at = _int(headers.get(H.ROUTED_AT))
        timings = {"scored": _ms(scored_ms), "total": _ms(now_ms - record.timestamp)}
        if routed_at is not None:
            timings["routed"] = _ms(routed_at - record.timestamp)
        self.results[status] += 1
        self.metrics.result(request.objective, model_id, status, timings["total"], request.traffic)
        key = request.request_id.encode()
        trace = trace_headers(headers)
        shadows = headers.get(H.SHADOWS)
        if shadows:
            side = self._shadow_side(work, Role.PRIMARY, model_id, outcome, status, scored_ms, now_ms,
                                     primary_model=model_id, shadow_models=shadows.split(","))
            outbox.put(self.layout.shadow_results, codec.encode(side), key=key, headers=trace, tag=record)
        result = codec.encode_result(request.request_id, request.objective, status, model=model_id,
                                     cell=headers.get(H.CELL), rules_version=_int(headers.get(H.RULES_VERSION)),
                                     shard=self.shard, result=outcome.value, error=outcome.error,
                                     timings_ms=timings, traffic=request.traffic)
        outbox.put(request.reply_to, result, key=key, partition=partition, headers=trace, tag=record)

    def _shadow_side(self, work: Work, role: str, model_id: str, outcome: Outcome, status: str, scored_ms: float,
                     now_ms: float, *, primary_model: str, shadow_models: list[str]) -> ShadowResult:
        context = {f: work.request.context[f] for f in SLICE_FIELDS if f in work.request.context}
        context["client"] = work.request.client
        return ShadowResult(role=role, request_id=work.request.request_id, objective=work.request.objective,
                            model=model_id, primary_model=primary_model, shadow_models=shadow_models,
                            cell=work.headers.get(H.CELL), rules_version=_int(work.headers.get(H.RULES_VERSION)),
                            shard=self.shard, status=status, result=outcome.value, error=outcome.error,
                            latency_ms=_ms(scored_ms), traffic=work.request.traffic, context=context,
                            ts_ms=int(now_ms))



class ShadowWorker(Worker):
    """Scores shadow copies with their candidate model; records the shadow side only."""

    role = "shadow"
    stage = Stage.SHADOW
    replies = False

    def __init__(self, kafka: KafkaSettings, layout: TopicLayout, registry: ModelRegistry, *,
                 group_id: str | None = None, facts: FactTopicMaterialiser | None = None,
                 transport: Transport | None = None, repository: ModelRepository | None = None,
                 rules: RulesHolder | None = None, executor: ScoringExecutor | None = None) -> None:
        super().__init__(kafka, layout, registry, shard="shadow", group_id=group_id or layout.shadow_group,
                         facts=facts, transport=transport, repository=repository, rules=rules, executor=executor)

    @staticmethod
    def _topics(layout: TopicLayout, shard: str) -> list[str]:
        return [layout.shadow]

    def _placed(self, rules: Rules) -> tuple[str, ...]:
        return tuple(dict.fromkeys(e.model for o in rules.objectives.values() for e in o.shadow))

    def _emit(self, outbox: Outbox, work: Work, model_id: str, outcome: Outcome, *, scored_ms: float,
              status: str | None = None, partition: int | None = None) -> None:
        status = status or (Status.OK if outcome.error is None else Status.ERROR)
        self.results[status] += 1
        now_ms = time.time() * 1000
        self.metrics.result(work.request.objective, model_id, status, now_ms - work.record.timestamp,
                            work.request.traffic)
        shadows = work.headers.get(H.SHADOWS, "")
        side = self._shadow_side(work, Role.SHADOW, model_id, outcome, status, scored_ms, now_ms,
                                 primary_model=work.headers.get(H.PRIMARY_MODEL, ""),
                                 shadow_models=shadows.split(",") if shadows else [model_id])
        outbox.put(self.layout.shadow_results, codec.encode(side), key=work.request.request_id.encode(),
                   headers=trace_headers(work.headers), tag=work.record)


_DEAD_LETTERED = frozenset({ErrorCode.WORKFLOW_ERROR, ErrorCode.WORKFLOW_TIMEOUT})
"""Outcomes that are the platform's fault, not the client's: kept on the dead-letter topic too, for operators."""


def _forget(future: Future[Any]) -> None:
    """Retrieve an abandoned call's outcome, so a late exception is not reported as never retrieved."""
    if not future.cancelled():
        future.exception()


def _check_agreement(headers: dict[str, str], request: Request) -> None:
    """Raise ``header_mismatch`` for the first routing header that names another value than the body."""
    for header, attribute in _AGREEMENT:
        said = headers.get(header)
        if said is not None and said != getattr(request, attribute):
            raise InvalidMessage(ErrorCode.HEADER_MISMATCH,
                                 f"header {header} says {said!r} but the body's {attribute} is "
                                 f"{getattr(request, attribute)!r}", field=attribute)


def _ms(value: float) -> float:
    """Milliseconds to 3 decimals, as ``round(value, 3)`` gives them, in a quarter of its time."""
    return round(value * 1000.0) / 1000.0


def _int(raw: str | None) -> int | None:
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None

