"""The rollout controller: the ``rollout`` role of ``scoreline run``.

It follows the rollouts topic in a consumer group of its own. The group's one partition is its
lease: the member it is assigned to is the active controller, the others stand by and take over
when it dies (after the group's session timeout). On taking the partition it reads the topic
from the beginning, so every rollout's state is what the last controller wrote, and carries on
from the step each one was in: a step's evidence is read again from the reply topics, from the
time the step started.

Each tick it applies the commands written by ``scoreline rollout`` and moves every running
rollout: publish a step's rules version, judge its evidence (``routing.rollout.decide_step``),
then advance, promote, roll back or pause. It writes each rollout's state after every change
and every few seconds while a step gathers evidence.

A rules version published by hand that changes the objective under rollout (its default, or a
canary other than the step's) pauses the rollout and says which version did it: the controller
never overwrites a hand-made change. ``rollout resume`` re-applies the step on top of the
version in force; ``rollout abort`` takes the canary away.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from routing import Rules, rules_to_doc
from routing.errors import RulesError
from routing.rollout import (
    AgreementGuard,
    Guard,
    Judgement,
    StepAction,
    Verdict,
    canary_rules,
    decide_step,
    judge_agreement,
    parse_guard,
    plan_steps,
    promoted_rules,
    rolled_back_rules,
)
from routing.rules import Canary
from schemas.errors import ScorelineError
from streams.rollouts.evidence import EvidenceReader, Window, reply_topic_pattern
from streams.rollouts.records import (
    ACTIVE,
    Command,
    Rollout,
    RolloutLog,
    State,
    Step,
    command_key,
    done_key,
    encode,
)
from streams.rules.holder import RulesHolder
from streams.rules.log import PARTITION, quietly
from streams.rules.publisher import RulesPublisher
from streams.topics import TopicLayout
from streams.transport.admin import ensure_topics
from streams.transport.settings import KafkaSettings

__all__ = ["RolloutController", "SHADOW_LOOKBACK_S", "adopt_canary", "rules_conflict"]

log = logging.getLogger(__name__)

SHADOW_LOOKBACK_S = 24 * 3600.0
"""How far back the agreement guards read the candidate's shadow comparisons."""
PROGRESS_EVERY_S = 5.0
"""How often a step gathering evidence writes its state (for ``rollout status`` and ``top``)."""
KEEP_APPLIED = 20


class RolloutController:
    """Runs every rollout on one rollouts topic (one active controller per topic; see the module doc)."""

    role = "rollout"
    stage = "rollout"

    def __init__(self, kafka: KafkaSettings, layout: TopicLayout, rules: RulesHolder, *, group_id: str,
                 tick_s: float = 1.0, clock=time.time) -> None:
        self.kafka, self.layout, self.rules = kafka, layout, rules
        self.topic = layout.rollouts
        self.group_id, self.tick_s, self.clock = group_id, tick_s, clock
        self.log = RolloutLog()
        self.active = False
        """Whether this controller holds the rollouts partition and has read it to its end."""
        self.windows: dict[str, Window] = {}
        self.shadow: dict[str, Window] = {}
        self.batches = self.records = self.dead_letters = 0
        self._consumer = kafka.consumer(group_id=group_id, role="rollout", auto_offset_reset="earliest",
                                        session_timeout_ms=10_000)
        self._producer = kafka.producer("rollout", linger_ms=0)
        self._reader = EvidenceReader(kafka, layout.shadow_comparisons)
        self._joined = asyncio.Event()
        self._catch_up_to: int | None = None
        self._written_at: dict[str, float] = {}
        self._unwritten: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._failed: BaseException | None = None

    @property
    def failed(self) -> BaseException | None:
        return self._failed

    async def start(self) -> None:
        await ensure_topics(self.kafka.bootstrap, [s for s in self.layout.specs(()) if s.name == self.topic],
                            replication_factor=self.layout.replication_factor, **self.kafka.security)
        await self._producer.start()
        await self._reader.start()
        await self._consumer.start()
        self._consumer.subscribe([self.topic], listener=_Lease(self))
        self._task = asyncio.create_task(self._run(), name="rollout-controller")

    async def __aenter__(self) -> RolloutController:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def rollout_figures(self) -> list[tuple[str, str, str, float]]:
        """``(objective, candidate, state, percent)`` of each objective's latest rollout (none while standing by)."""
        if not self.active:
            return []
        return [(r.objective, r.candidate, r.state, r.percent) for r in sorted(self.log.current.values(),
                                                                                key=lambda r: r.objective)]

    async def wait_assigned(self, timeout: float = 60.0) -> None:
        """Return once the group has been joined (as the active controller or a standby)."""
        await asyncio.wait_for(self._joined.wait(), timeout)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await quietly(self._consumer.stop())
        await self._reader.stop()
        await quietly(self._producer.stop())

    # -- the loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        last_tick = 0.0
        try:
            while True:
                await self._read_log()
                if self.active and time.monotonic() - last_tick >= self.tick_s:
                    last_tick = time.monotonic()
                    await self._tick()
                results, comparisons = await self._reader.poll(0.2)
                self._absorb(results, comparisons)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("rollout controller failed")
            self._failed = exc
            raise

    async def _read_log(self) -> None:
        try:
            batch = await self._consumer.getmany(timeout_ms=200)
        except KafkaError as exc:
            log.warning("rollout controller: reading %s failed (%r); retrying", self.topic, exc)
            return
        for records in batch.values():
            for record in records:
                key = record.key.decode("utf-8", "replace") if record.key is not None else ""
                # Once active this controller is the only writer of the state keys, and holds the
                # newest state itself: its own records coming back would only be older.
                if not self.active or key.startswith("command."):
                    self.log.take(key, record.value, record.offset)
        if self._catch_up_to is not None:
            tp = TopicPartition(self.topic, PARTITION)
            if tp in self._consumer.assignment() and await self._consumer.position(tp) >= self._catch_up_to:
                self._catch_up_to = None
                self.active = True
                running = [r.objective for r in self.log.current.values() if r.state in ACTIVE]
                log.info("rollout controller active on %s; rollouts in progress: %s", self.topic,
                         ", ".join(running) or "none")

    def _took_lease(self) -> None:
        self.log, self.windows, self.shadow, self._unwritten = RolloutLog(), {}, {}, set()
        self._catch_up_to, self.active = None, False

    def _lost_lease(self) -> None:
        self.active, self._catch_up_to = False, None

    def _absorb(self, results: list[dict[str, Any]], comparisons: list[dict[str, Any]]) -> None:
        for window in self.windows.values():
            for doc in results:
                window.absorb_result(doc)
        for window in self.shadow.values():
            for doc in comparisons:
                window.absorb_comparison(doc)
        self.records += len(results) + len(comparisons)

    async def _tick(self) -> None:
        # Kafka away or a publish fenced: the next tick tries again. Every step keeps what it has
        # done in the rollout it changes (a published version is never published twice).
        for objective in sorted(self._unwritten):
            await self._write(self.log.current[objective])
        for command in list(self.log.commands.values()):
            try:
                await self._apply(command)
            except (ScorelineError, KafkaError) as exc:
                log.warning("rollout command %s %s: %s; retrying", command.action, command.objective, exc)
        for rollout in list(self.log.current.values()):
            if rollout.state == State.RUNNING:
                try:
                    await self._advance(rollout)
                except RulesError as exc:  # e.g. the candidate taken off its shard by hand: never guess
                    await self._pause(rollout, f"the next rules version would be invalid: {exc}")
                except (ScorelineError, KafkaError) as exc:
                    log.warning("rollout of %s on %s: %s; retrying", rollout.candidate, rollout.objective, exc)

    # -- commands ------------------------------------------------------------------------------

    async def _apply(self, command: Command) -> None:
        rollout = self.log.current.get(command.objective)
        now = self._now_ms()
        try:
            if command.action == "start":
                rollout = await self._start(command, rollout)
            elif rollout is None or rollout.state not in ACTIVE:
                raise RolloutCommandRefused(f"no rollout of {command.objective} is running or paused")
            elif command.action == "pause":
                if rollout.state != State.PAUSED:
                    rollout.state, rollout.reason = State.PAUSED, f"paused by {command.by}"
            elif command.action == "resume":
                if rollout.state == State.PAUSED:
                    rollout.state, rollout.reason = State.RUNNING, f"resumed by {command.by}"
                    paused = rollout.current
                    if paused.rules_version is not None:  # the step again, over the version in force
                        paused.decision, paused.ended_ms = paused.decision or "pause", paused.ended_ms or now
                        rollout.steps.insert(rollout.step + 1, Step(paused.percent))
                        rollout.step += 1
                    rollout.current.resumed = True
            elif command.action == "abort":
                await self._end_with_rollback(rollout, State.ABORTED, f"aborted by {command.by}")
            else:
                raise RolloutCommandRefused(f"unknown action {command.action!r}")
            rollout.applied = (rollout.applied + [command.id])[-KEEP_APPLIED:]
            rollout.updated_ms = now
            await self._write(rollout)
            log.info("rollout command %s %s applied: %s is %s", command.action, command.objective,
                     rollout.candidate, rollout.state)
        except (RolloutCommandRefused, RulesError, ValueError) as exc:
            log.warning("rollout command %s %s (%s) refused: %s", command.action, command.objective, command.id, exc)
        await self._send(command_key(command.id), None)
        self.log.commands.pop(command.id, None)

    async def _start(self, command: Command, current: Rollout | None) -> Rollout:
        spec = command.spec
        if spec is None:
            raise RolloutCommandRefused("a start command without its spec")
        if current is not None and current.state in ACTIVE:
            raise RolloutCommandRefused(f"rollout {current.id} of {current.candidate} on {spec.objective} is "
                                        f"{current.state}")
        rules = await self._latest_rules()
        if spec.objective not in rules.objectives:
            raise RolloutCommandRefused(f"rules version {rules.version} has no objective {spec.objective!r}")
        objective = rules.objective(spec.objective)
        if spec.candidate not in rules.models:
            raise RolloutCommandRefused(f"{spec.candidate} is not placed on a shard in rules version {rules.version}")
        if objective.default == spec.candidate:
            raise RolloutCommandRefused(f"{spec.candidate} is already {spec.objective}'s default")
        for guard in spec.guards:
            parse_guard(guard)
        canary = objective.canary
        plan = plan_steps(spec.steps, canary.percent if canary is not None and canary.model == spec.candidate
                          else None)
        return Rollout(id=command.id, spec=dataclasses.replace(spec, steps=plan), incumbent=objective.default,
                       state=State.RUNNING, steps=[Step(p) for p in plan], started_ms=self._now_ms(),
                       updated_ms=self._now_ms(), started_by=command.by)

    # -- steps ---------------------------------------------------------------------------------

    async def _advance(self, rollout: Rollout) -> None:
        step = rollout.current
        if step.rules_version is None:
            await self._begin_step(rollout)
            return
        conflict = rules_conflict(rollout, self.rules())
        if conflict:
            await self._pause(rollout, conflict)
            return
        window = self.windows.get(rollout.objective)
        if window is None or window.since_version != step.rules_version:
            window = await self._open_window(rollout)
        guards, agreement = self._guards(rollout)
        decision = decide_step(window.candidate_arm, window.incumbent_arm, guards,
                               elapsed_s=(self._now_ms() - (step.started_ms or 0)) / 1000,
                               step_s=rollout.spec.step_seconds, min_samples=rollout.spec.min_samples,
                               max_samples=rollout.spec.max_samples,
                               agreement=self._agreement(rollout, agreement))
        step.evidence, step.judgements = window.summary(), [_judgement(j) for j in decision.judgements]
        step.reason = decision.reason
        if decision.action is StepAction.WAIT:
            if time.monotonic() - self._written_at.get(rollout.objective, 0.0) >= PROGRESS_EVERY_S:
                rollout.updated_ms = self._now_ms()
                await self._write(rollout)
            return
        step.decision, step.ended_ms = decision.action.value, self._now_ms()
        if decision.action is StepAction.ROLL_BACK:
            await self._end_with_rollback(rollout, State.ROLLED_BACK, decision.reason)
        elif decision.action is StepAction.PAUSE:
            rollout.state, rollout.reason = State.PAUSED, decision.reason
        else:
            rollout.step += 1
            log.info("rollout of %s on %s: step %g%% passed (%d candidate results)", rollout.candidate,
                     rollout.objective, step.percent, window.candidate_arm.results)
            if rollout.current.percent >= 100:
                await self._promote(rollout)
        rollout.updated_ms = self._now_ms()
        await self._write(rollout)

    async def _begin_step(self, rollout: Rollout) -> None:
        """Publish the current step's rules version (or promote, at 100 %), after the shadow gate on step one."""
        step = rollout.current
        _, agreement = self._guards(rollout)
        if agreement and rollout.step == 0:
            shadow = await self._open_shadow(rollout)
            if not await self._reader.comparisons_read():
                return  # still reading the candidate's shadow comparisons: judge them before any live traffic
            failed = [j for j in (judge_agreement(g, shadow.agreement[g.metric]) for g in agreement)
                      if j.verdict is Verdict.FAIL]
            if failed:
                step.judgements = [_judgement(j) for j in failed]
                step.decision, step.ended_ms = StepAction.ROLL_BACK.value, self._now_ms()
                await self._end_with_rollback(rollout, State.ROLLED_BACK, "before any live traffic, "
                                              + "; ".join(f"{j.guard} failed: {j.reason}" for j in failed))
                await self._write(rollout)
                return
        if step.percent >= 100:
            await self._promote(rollout)
        else:
            latest = await self._latest_rules()
            conflict = rules_conflict(rollout, latest, before_step=True)
            if conflict:
                await self._pause(rollout, conflict)
                return
            adopt_canary(rollout, latest)
            step = rollout.current
            published = await self._publish(rollout, canary_rules(latest, rollout.objective, rollout.candidate,
                                                                  step.percent), f"step {step.percent:g}%")
            step.rules_version, step.started_ms = published.version, self._now_ms()
            step.decision = step.ended_ms = None
            step.evidence, step.judgements = {}, []
            await self._open_window(rollout)
        rollout.updated_ms = self._now_ms()
        await self._write(rollout)

    async def _promote(self, rollout: Rollout) -> None:
        step = rollout.current
        latest = await self._latest_rules()
        conflict = rules_conflict(rollout, latest, before_step=True)
        if conflict:
            rollout.state, rollout.reason = State.PAUSED, conflict
            return
        published = await self._publish(rollout, promoted_rules(latest, rollout.objective, rollout.candidate),
                                         "promoted")
        step.rules_version, step.started_ms = published.version, self._now_ms()
        step.ended_ms, step.decision = self._now_ms(), "promoted"
        rollout.state, rollout.final_rules_version = State.PROMOTED, published.version
        rollout.reason = f"every step passed: {rollout.candidate} is {rollout.objective}'s default"
        self._forget(rollout)

    async def _end_with_rollback(self, rollout: Rollout, state: str, reason: str) -> None:
        """Take the canary away (if the candidate still holds it), then end the rollout in ``state``."""
        step = rollout.current
        if step.rules_version is not None and step.decision is None:  # the step in force ends here too
            step.decision, step.ended_ms = ("abort" if state == State.ABORTED else StepAction.ROLL_BACK.value,
                                            self._now_ms())
        latest = await self._latest_rules()
        canary = latest.objective(rollout.objective).canary if rollout.objective in latest.objectives else None
        if canary is not None and canary.model == rollout.candidate:
            published = await self._publish(rollout, rolled_back_rules(latest, rollout.objective), state)
            rollout.final_rules_version = published.version
        rollout.state, rollout.reason = state, reason
        log.warning("rollout of %s on %s %s: %s", rollout.candidate, rollout.objective, state, reason)
        self._forget(rollout)

    async def _pause(self, rollout: Rollout, reason: str) -> None:
        rollout.state, rollout.reason, rollout.updated_ms = State.PAUSED, reason, self._now_ms()
        log.warning("rollout of %s on %s paused: %s", rollout.candidate, rollout.objective, reason)
        await self._write(rollout)

    async def _publish(self, rollout: Rollout, rules: Rules, what: str):
        publisher = RulesPublisher(self.kafka, self.layout,
                                   published_by=f"rollout {rollout.id} of {rollout.candidate} ({what})")
        record = (await publisher.publish_version(rules_to_doc(rules))).record
        log.info("rollout of %s on %s: %s, rules version %d", rollout.candidate, rollout.objective, what,
                 record.version)
        return record

    async def _latest_rules(self) -> Rules:
        latest = await RulesPublisher(self.kafka, self.layout).latest()
        return latest.rules() if latest is not None else self.rules()

    # -- evidence ------------------------------------------------------------------------------

    def _guards(self, rollout: Rollout) -> tuple[list[Guard], list[AgreementGuard]]:
        parsed = [parse_guard(g) for g in rollout.spec.guards]
        return ([g for g in parsed if not isinstance(g, AgreementGuard)],
                [g for g in parsed if isinstance(g, AgreementGuard)])

    def _agreement(self, rollout: Rollout, guards: list[AgreementGuard]) -> list[Judgement]:
        shadow = self.shadow.get(rollout.objective)
        return [judge_agreement(g, shadow.agreement[g.metric] if shadow else []) for g in guards]

    async def _open_window(self, rollout: Rollout) -> Window:
        step = rollout.current
        assert step.rules_version is not None and step.started_ms is not None
        window = Window(rollout.objective, rollout.candidate, rollout.incumbent, step.rules_version)
        self.windows[rollout.objective] = window
        _, agreement = self._guards(rollout)
        if agreement and rollout.objective not in self.shadow:
            await self._open_shadow(rollout)
        # A second back: the publish time is the controller's clock, the records' the producers'.
        await self._reader.follow(self._reply_topics(), step.started_ms - 1000)
        return window

    async def _open_shadow(self, rollout: Rollout) -> Window:
        shadow = self.shadow.get(rollout.objective)
        if shadow is None:
            _, agreement = self._guards(rollout)
            shadow = Window(rollout.objective, rollout.candidate, rollout.incumbent, 0, {g.metric for g in agreement})
            self.shadow[rollout.objective] = shadow
            await self._reader.follow(self._reply_topics(), self._now_ms(),
                                      comparisons_since_ms=rollout.started_ms - int(SHADOW_LOOKBACK_S * 1000))
        return shadow

    def _reply_topics(self):
        rules = self.rules()
        return reply_topic_pattern(self.layout.prefix, {t for c in rules.clients.values() for t in c.reply_topics})

    def _forget(self, rollout: Rollout) -> None:
        self.windows.pop(rollout.objective, None)
        self.shadow.pop(rollout.objective, None)

    # -- the topic -----------------------------------------------------------------------------

    async def _write(self, rollout: Rollout) -> None:
        """Write the rollout's state; if Kafka refuses, keep it to write again at the next tick."""
        self.log.current[rollout.objective] = rollout
        try:
            await self._send(rollout.objective, encode(rollout))
            if rollout.state not in ACTIVE:
                await self._send(done_key(rollout.id), encode(rollout))
        except KafkaError as exc:
            self._unwritten.add(rollout.objective)
            log.warning("rollout of %s on %s: writing its state failed (%r); the next tick writes it",
                        rollout.candidate, rollout.objective, exc)
            return
        self._unwritten.discard(rollout.objective)
        self._written_at[rollout.objective] = time.monotonic()

    async def _send(self, key: str, value: bytes | None) -> None:
        await self._producer.send_and_wait(self.topic, value, key=key.encode(), partition=PARTITION)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)


class RolloutCommandRefused(Exception):
    """A command the controller does not apply (logged; the command line says why before it writes one)."""


class _Lease(ConsumerRebalanceListener):
    """The rollouts partition as a lease: whoever holds it runs the rollouts."""

    def __init__(self, controller: RolloutController) -> None:
        self.controller = controller

    async def on_partitions_revoked(self, revoked) -> None:
        if revoked:
            log.info("rollout controller: lease on %s lost; standing by", self.controller.topic)
        self.controller._lost_lease()

    async def on_partitions_assigned(self, assigned) -> None:
        controller = self.controller
        tp = TopicPartition(controller.topic, PARTITION)
        if tp in assigned:
            consumer = controller._consumer
            controller._took_lease()  # before the seek: the loop may fold records while this awaits
            await consumer.seek_to_beginning(tp)
            controller._catch_up_to = (await consumer.end_offsets([tp]))[tp]
        elif assigned is not None:
            log.info("rollout controller: standing by (another controller holds %s)", controller.topic)
        controller._joined.set()


def rules_conflict(rollout: Rollout, rules: Rules, *, before_step: bool = False) -> str | None:
    """Why the rules in force no longer are what this rollout last published for its objective, if so."""
    last: Step | None = rollout.current
    if before_step:  # the step before this one, unless this one was resumed over a hand-made change
        last = rollout.steps[rollout.step - 1] if rollout.step > 0 and not rollout.current.resumed else None
    if last is None or last.rules_version is None or rules.version < last.rules_version:
        return None  # nothing published yet, or the rules topic not yet read up to it
    if rollout.objective not in rules.objectives:
        return f"rules version {rules.version} has no objective {rollout.objective}"
    objective = rules.objective(rollout.objective)
    expected = Canary(rollout.candidate, last.percent)
    if objective.default == rollout.incumbent and objective.canary == expected:
        return None
    return (f"rules version {rules.version} changed {rollout.objective} during the rollout (default "
            f"{objective.default}, canary {_canary(objective.canary)}; the rollout had published "
            f"{_canary(expected)} in version {last.rules_version}): paused. `scoreline rollout resume` "
            f"re-applies the step over version {rules.version}; `scoreline rollout abort` ends it")


def adopt_canary(rollout: Rollout, rules: Rules) -> None:
    """If ``rules`` hold the candidate at a higher canary than the step about to begin (set by hand, then
    resumed), the step begins there instead: a step never moves users off the candidate."""
    canary = rules.objective(rollout.objective).canary
    step = rollout.current
    if canary is None or canary.model != rollout.candidate or canary.percent <= step.percent:
        return
    later = [s for s in rollout.steps[rollout.step + 1:] if s.percent > canary.percent]
    rollout.steps[rollout.step:] = [Step(canary.percent)] + later
    log.info("rollout of %s on %s: the rules in force hold it at %g%%; the step begins there", rollout.candidate,
             rollout.objective, canary.percent)


def _judgement(j: Judgement) -> dict[str, Any]:
    doc = dataclasses.asdict(j)
    doc["verdict"] = j.verdict.value
    doc["interval"] = list(j.interval) if j.interval is not None else None
    return doc


def _canary(canary: Canary | None) -> str:
    return f"{canary.model} at {canary.percent:g}%" if canary is not None else "none"
