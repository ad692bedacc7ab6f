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
import logging
import time

from routing import Rules, rules_to_doc
from routing.errors import RulesError
from routing.rollout import (
    AgreementGuard,
    Judgement,
    StepAction,
    Verdict,
    canary_rules,
    decide_step,
    judge_agreement,
    promoted_rules,
    rolled_back_rules,
)
from schemas.errors import ScorelineError
from streams.rollouts.evidence import Evidence, Window
from streams.rollouts.records import (
    ACTIVE,
    COMMAND_PREFIX,
    EPOCH_KEY,
    Command,
    Rollout,
    RolloutLog,
    RolloutRefused,
    State,
    command_key,
    done_key,
    encode,
)
from streams.rollouts.steps import adopt_canary, guards_of, judgement_doc, new_rollout, resume, rules_conflict
from streams.rules.holder import RulesHolder
from streams.rules.log import PARTITION, quietly
from streams.rules.publisher import RulesConflict, RulesPublisher
from streams.topics import TopicLayout
from streams.transport.follow import CatchUp
from streams.transport.kafka import KafkaTransport
from streams.transport.protocols import KafkaError, RebalanceListener, TopicPartition, Transport
from streams.transport.settings import KafkaSettings

__all__ = ["RolloutController", "SHADOW_LOOKBACK_S"]

log = logging.getLogger(__name__)

_CHANGED_MEANWHILE = ("the rules changed by hand while the step was being published ({}); check the change and "
                      "resume the rollout")
_ROLLBACK_ATTEMPTS = 3
"""A rollback publishes on top of the latest rules; a publish that lands in between makes it read and try again."""

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
                 tick_s: float = 1.0, clock=time.time, transport: Transport | None = None) -> None:
        self.kafka, self.layout, self.rules = kafka, layout, rules
        self.transport = transport if transport is not None else KafkaTransport(kafka)
        self.topic = layout.rollouts
        self.group_id, self.tick_s, self.clock = group_id, tick_s, clock
        self.log = RolloutLog()
        self.active = False
        """Whether this controller holds the rollouts partition and has read it to its end."""
        self.epoch = 0
        """This controller's epoch while active (``records.EPOCH_KEY``): every state record it writes carries it."""
        self.evidence = Evidence(self.transport, layout.prefix, layout.shadow_comparisons, self._reply_topics)
        """Each running rollout's step window and shadow comparisons, read from the reply and comparison topics."""
        self.batches = self.records = self.dead_letters = 0
        # The group's one partition is the lease; the listener hears who holds it (see _Lease).
        self._consumer = self.transport.consumer([self.topic], group_id=group_id, role="rollout",
                                                 listener=_Lease(self))
        self._producer = self.transport.producer("rollout")
        self._joined = asyncio.Event()
        self._catch_up = CatchUp(self._consumer)
        self._catching_up = False
        self._written_at: dict[str, float] = {}
        self._unwritten: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._failed: BaseException | None = None

    @property
    def failed(self) -> BaseException | None:
        return self._failed

    async def start(self) -> None:
        await self.transport.ensure_topics([s for s in self.layout.specs(()) if s.name == self.topic],
                                           replication_factor=self.layout.replication_factor)
        await self._producer.start()
        await self.evidence.start()
        await self._consumer.start()  # waits for the group's coordinator: a fresh cluster's lease needs one
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
        await self.evidence.stop()
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
                self.records += await self.evidence.poll(0.2)
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
                if not self.active or key.startswith(COMMAND_PREFIX):
                    self.log.take(key, record.value, record.offset)
        if self._catching_up:
            tp = TopicPartition(self.topic, PARTITION)
            if tp in self._consumer.assignment() and await self._catch_up.done():
                # A new epoch, one past any read, written before the first state write: whatever a deposed
                # controller (paused, cut off) writes later carries an older one, and every reader ignores it.
                epoch = self.log.epoch + 1
                try:
                    await self._send(EPOCH_KEY, str(epoch).encode())
                except KafkaError as exc:
                    log.warning("rollout controller: writing epoch %d failed (%r); retrying", epoch, exc)
                    return
                self.epoch, self.log.epoch = epoch, epoch
                self._catching_up = False
                self.active = True
                running = [r.objective for r in self.log.current.values() if r.state in ACTIVE]
                log.info("rollout controller active on %s; rollouts in progress: %s", self.topic,
                         ", ".join(running) or "none")

    def _took_lease(self) -> None:
        self.log, self._unwritten = RolloutLog(), set()
        self.evidence.clear()
        self._catch_up.forget(list(self._catch_up.targets))
        self._catching_up, self.active = False, False

    def _lost_lease(self) -> None:
        self._catch_up.forget(list(self._catch_up.targets))
        self.active, self._catching_up = False, False

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
                raise RolloutRefused(f"no rollout of {command.objective} is running or paused")
            elif command.action == "pause":
                if rollout.state != State.PAUSED:
                    rollout.state, rollout.reason = State.PAUSED, f"paused by {command.by}"
            elif command.action == "resume":
                resume(rollout, command.by, now)
            elif command.action == "abort":
                await self._end_with_rollback(rollout, State.ABORTED, f"aborted by {command.by}")
            else:
                raise RolloutRefused(f"unknown action {command.action!r}")
            rollout.applied = (rollout.applied + [command.id])[-KEEP_APPLIED:]
            rollout.updated_ms = now
            await self._write(rollout)
            log.info("rollout command %s %s applied: %s is %s", command.action, command.objective,
                     rollout.candidate, rollout.state)
        except (RolloutRefused, RulesError, ValueError) as exc:
            log.warning("rollout command %s %s (%s) refused: %s", command.action, command.objective, command.id, exc)
        await self._send(command_key(command.id), None)
        self.log.commands.pop(command.id, None)

    async def _start(self, command: Command, current: Rollout | None) -> Rollout:
        return new_rollout(command, await self._latest_rules(), current, self._now_ms())

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
        window = self.evidence.window(rollout.objective)
        if window is None or window.since_version != step.rules_version:
            window = await self._open_window(rollout)
        guards, agreement = guards_of(rollout)
        decision = decide_step(window.candidate_arm, window.incumbent_arm, guards,
                               elapsed_s=(self._now_ms() - (step.started_ms or 0)) / 1000,
                               step_s=rollout.spec.step_seconds, min_samples=rollout.spec.min_samples,
                               max_samples=rollout.spec.max_samples,
                               agreement=self._agreement(rollout, agreement))
        step.evidence, step.judgements = window.summary(), [judgement_doc(j) for j in decision.judgements]
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
        _, agreement = guards_of(rollout)
        if agreement and rollout.step == 0:
            await self._open_shadow(rollout)
            if not await self.evidence.comparisons_read():
                return  # still reading the candidate's shadow comparisons: judge them before any live traffic
            failed = [j for j in self._agreement(rollout, agreement) if j.verdict is Verdict.FAIL]
            if failed:
                step.judgements = [judgement_doc(j) for j in failed]
                step.decision, step.ended_ms = StepAction.ROLL_BACK.value, self._now_ms()
                await self._end_with_rollback(rollout, State.ROLLED_BACK, "before any live traffic, "
                                              + "; ".join(f"{j.guard} failed: {j.reason}" for j in failed))
                await self._write(rollout)
                return
        if step.percent >= 100:
            await self._promote(rollout)
        else:
            latest, base = await self._latest()
            conflict = rules_conflict(rollout, latest, before_step=True)
            if conflict:
                await self._pause(rollout, conflict)
                return
            adopt_canary(rollout, latest)
            if rollout.current.percent != step.percent:
                log.info("rollout of %s on %s: the rules in force hold it at %g%%; the step begins there",
                         rollout.candidate, rollout.objective, rollout.current.percent)
            step = rollout.current
            try:
                published = await self._publish(rollout, canary_rules(latest, rollout.objective, rollout.candidate,
                                                                      step.percent), f"step {step.percent:g}%", base)
            except RulesConflict as exc:
                await self._pause(rollout, _CHANGED_MEANWHILE.format(exc))
                return
            step.rules_version, step.started_ms = published.version, self._now_ms()
            step.decision = step.ended_ms = None
            step.evidence, step.judgements = {}, []
            await self._open_window(rollout)
        rollout.updated_ms = self._now_ms()
        await self._write(rollout)

    async def _promote(self, rollout: Rollout) -> None:
        step = rollout.current
        latest, base = await self._latest()
        conflict = rules_conflict(rollout, latest, before_step=True)
        if conflict:
            rollout.state, rollout.reason = State.PAUSED, conflict
            return
        try:
            published = await self._publish(rollout, promoted_rules(latest, rollout.objective, rollout.candidate),
                                             "promoted", base)
        except RulesConflict as exc:
            rollout.state, rollout.reason = State.PAUSED, _CHANGED_MEANWHILE.format(exc)
            return
        step.rules_version, step.started_ms = published.version, self._now_ms()
        step.ended_ms, step.decision = self._now_ms(), "promoted"
        rollout.state, rollout.final_rules_version = State.PROMOTED, published.version
        rollout.reason = f"every step passed: {rollout.candidate} is {rollout.objective}'s default"
        self.evidence.forget(rollout.objective)

    async def _end_with_rollback(self, rollout: Rollout, state: str, reason: str) -> None:
        """Take the canary away (if the candidate still holds it), then end the rollout in ``state``."""
        step = rollout.current
        if step.rules_version is not None and step.decision is None:  # the step in force ends here too
            step.decision, step.ended_ms = ("abort" if state == State.ABORTED else StepAction.ROLL_BACK.value,
                                            self._now_ms())
        for attempt in range(_ROLLBACK_ATTEMPTS):  # taking the canary away must happen: on top of whatever landed
            latest, base = await self._latest()
            canary = latest.objective(rollout.objective).canary if rollout.objective in latest.objectives else None
            if canary is None or canary.model != rollout.candidate:
                break
            try:
                published = await self._publish(rollout, rolled_back_rules(latest, rollout.objective), state, base)
            except RulesConflict:
                if attempt == _ROLLBACK_ATTEMPTS - 1:
                    raise
                continue
            rollout.final_rules_version = published.version
            break
        rollout.state, rollout.reason = state, reason
        log.warning("rollout of %s on %s %s: %s", rollout.candidate, rollout.objective, state, reason)
        self.evidence.forget(rollout.objective)

    async def _pause(self, rollout: Rollout, reason: str) -> None:
        rollout.state, rollout.reason, rollout.updated_ms = State.PAUSED, reason, self._now_ms()
        log.warning("rollout of %s on %s paused: %s", rollout.candidate, rollout.objective, reason)
        await self._write(rollout)

    async def _publish(self, rollout: Rollout, rules: Rules, what: str, base: int):
        """Publish ``rules``, made from version ``base``, only if ``base`` is still the latest (``RulesConflict``
        otherwise: a hand-made publish that landed meanwhile is never overwritten)."""
        publisher = RulesPublisher(self.kafka, self.layout, transport=self.transport,
                                   published_by=f"rollout {rollout.id} of {rollout.candidate} ({what})")
        record = (await publisher.publish_version(rules_to_doc(rules), if_version=base)).record
        log.info("rollout of %s on %s: %s, rules version %d", rollout.candidate, rollout.objective, what,
                 record.version)
        return record

    async def _latest_rules(self) -> Rules:
        return (await self._latest())[0]

    async def _latest(self) -> tuple[Rules, int]:
        """The rules in force, and the published version they are (0: none published, the fallback rules)."""
        latest = await RulesPublisher(self.kafka, self.layout, transport=self.transport).latest()
        return (latest.rules(), latest.version) if latest is not None else (self.rules(), 0)

    # -- evidence ------------------------------------------------------------------------------

    def _agreement(self, rollout: Rollout, guards: list[AgreementGuard]) -> list[Judgement]:
        return [judge_agreement(g, self.evidence.agreement(rollout.objective, g.metric)) for g in guards]

    async def _open_window(self, rollout: Rollout) -> Window:
        step = rollout.current
        assert step.rules_version is not None and step.started_ms is not None
        _, agreement = guards_of(rollout)
        if agreement:
            await self._open_shadow(rollout)
        return await self.evidence.open_window(rollout.objective, rollout.candidate, rollout.incumbent,
                                               rules_version=step.rules_version, started_ms=step.started_ms)

    async def _open_shadow(self, rollout: Rollout) -> None:
        _, agreement = guards_of(rollout)
        await self.evidence.open_shadow(rollout.objective, rollout.candidate, rollout.incumbent,
                                        {g.metric for g in agreement},
                                        since_ms=rollout.started_ms - int(SHADOW_LOOKBACK_S * 1000))

    def _reply_topics(self) -> set[str]:
        return {t for c in self.rules().clients.values() for t in c.reply_topics}

    # -- the topic -----------------------------------------------------------------------------

    async def _write(self, rollout: Rollout) -> None:
        """Write the rollout's state, stamped with this controller's epoch; if Kafka refuses, keep it to write
        again at the next tick."""
        rollout.epoch = self.epoch
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


class _Lease(RebalanceListener):
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
            controller._took_lease()  # before the seek: the loop may fold records while this awaits
            await controller._catch_up.replay([tp])  # from the beginning, to the end it has now
            controller._catching_up = True
        elif assigned is not None:
            log.info("rollout controller: standing by (another controller holds %s)", controller.topic)
        controller._joined.set()
