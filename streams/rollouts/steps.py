"""What a rollout's record becomes on each event: pure, over a rules snapshot and the record (no Kafka, no clock).

The controller (:mod:`streams.rollouts.controller`) reads Kafka and the clock and writes the
results; the command line (:mod:`streams.rollouts.client`) checks a start with the same rules
before it writes one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from routing import Rules
from routing.rollout import AgreementGuard, Guard, Judgement, parse_guard, plan_steps
from routing.rules import Canary
from streams.rollouts.records import ACTIVE, Command, Rollout, RolloutRefused, RolloutSpec, State, Step

__all__ = ["adopt_canary", "check_start", "guards_of", "judgement_doc", "new_rollout", "resume", "rules_conflict"]


def guards_of(rollout: Rollout) -> tuple[list[Guard], list[AgreementGuard]]:
    """The rollout's guards, read from their command-line form: those on the step's results, the agreement ones."""
    parsed = [parse_guard(g) for g in rollout.spec.guards]
    return ([g for g in parsed if not isinstance(g, AgreementGuard)],
            [g for g in parsed if isinstance(g, AgreementGuard)])


def check_start(spec: RolloutSpec, rules: Rules, current: Rollout | None) -> tuple[float, ...]:
    """The steps a start of ``spec`` walks over ``rules``; raises :class:`RolloutRefused` saying why it cannot."""
    for guard in spec.guards:
        try:
            parse_guard(guard)
        except ValueError as exc:
            raise RolloutRefused(str(exc)) from None
    if current is not None and current.state in ACTIVE:
        raise RolloutRefused(f"{spec.objective} already has a rollout ({current.id}: {current.candidate}, "
                             f"{current.state} at {current.percent:g}%); one rollout per objective at a "
                             f"time: `scoreline rollout abort --objective {spec.objective}` first")
    if spec.objective not in rules.objectives:
        raise RolloutRefused(f"rules version {rules.version} has no objective {spec.objective!r} "
                             f"(objectives: {', '.join(sorted(rules.objectives))})")
    objective = rules.objective(spec.objective)
    if spec.candidate not in rules.models:
        raise RolloutRefused(f"{spec.candidate} is not placed on a shard in rules version {rules.version}: "
                             "place it (rules `models`, or `scoreline placement plan --apply`) and publish first")
    if objective.default == spec.candidate:
        raise RolloutRefused(f"{spec.candidate} already is {spec.objective}'s default")
    canary = objective.canary
    try:
        return plan_steps(spec.steps, canary.percent if canary is not None and canary.model == spec.candidate
                          else None)
    except ValueError as exc:
        raise RolloutRefused(str(exc)) from None


def new_rollout(command: Command, rules: Rules, current: Rollout | None, now_ms: int) -> Rollout:
    """The rollout a ``start`` command begins over ``rules`` (its incumbent: the objective's default now)."""
    if command.spec is None:
        raise RolloutRefused("a start command without its spec")
    spec = command.spec
    plan = check_start(spec, rules, current)
    return Rollout(id=command.id, spec=dataclasses.replace(spec, steps=plan),
                   incumbent=rules.objective(spec.objective).default, state=State.RUNNING,
                   steps=[Step(p) for p in plan], started_ms=now_ms, updated_ms=now_ms, started_by=command.by)


def resume(rollout: Rollout, by: str, now_ms: int) -> None:
    """Carry on a paused rollout: a step already in force ends (``pause``) and begins again as a new step,
    marked resumed, so that it begins over the rules in force then, whatever changed them by hand."""
    if rollout.state != State.PAUSED:
        return
    rollout.state, rollout.reason = State.RUNNING, f"resumed by {by}"
    paused = rollout.current
    if paused.rules_version is not None:
        paused.decision, paused.ended_ms = paused.decision or "pause", paused.ended_ms or now_ms
        rollout.steps.insert(rollout.step + 1, Step(paused.percent))
        rollout.step += 1
    rollout.current.resumed = True


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
    rollout.steps[rollout.step:] = [Step(canary.percent, resumed=step.resumed)] + later


def judgement_doc(j: Judgement) -> dict[str, Any]:
    """A guard's judgement as the rollout record keeps it (JSON)."""
    doc = dataclasses.asdict(j)
    doc["verdict"] = j.verdict.value
    doc["interval"] = list(j.interval) if j.interval is not None else None
    return doc


def _canary(canary: Canary | None) -> str:
    return f"{canary.model} at {canary.percent:g}%" if canary is not None else "none"
