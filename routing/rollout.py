"""Guarded rollouts, the pure part: the rules each step publishes, and how a step's guards judge its evidence.

A rollout moves an objective's traffic to a candidate model in canary steps (5, 25, 50, 100 %
by default). After each step has run long enough and the candidate has enough results, every
guard compares the candidate with the incumbent on the same window and says, with its 95 %
confidence interval:

- ``fail`` when the interval lies wholly past the threshold: roll back;
- ``pass`` when it lies wholly inside: this guard lets the step advance;
- ``wait`` otherwise: more samples are needed (up to a limit, then the rollout pauses).

Nothing here reads Kafka or a clock: the controller (a later role of ``scoreline run``) feeds
it counts and latencies and publishes the rules it returns. The intervals are the shadow
report's methods: Wilson intervals for rates (here Newcombe's hybrid for a difference of two),
and a distribution-free order-statistic interval for a quantile.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from routing.errors import RulesError
from routing.rules import Canary, Rules

__all__ = [
    "Arm", "DEFAULT_STEPS", "ErrorRateGuard", "LatencyGuard", "AgreementGuard", "Guard", "Verdict", "Judgement",
    "StepAction", "StepDecision", "decide_step", "wilson", "rate_difference", "quantile_interval", "canary_rules",
    "promoted_rules", "rolled_back_rules", "parse_guard", "guard_text", "GUARD_SYNTAX", "DEFAULT_GUARDS",
    "plan_steps", "judge_agreement", "agreement_values",
]

Z95 = 1.959963984540054
DEFAULT_STEPS: tuple[float, ...] = (5.0, 25.0, 50.0, 100.0)
"""Canary percentages of a rollout when none are given; the last makes the candidate the default."""


class Verdict(StrEnum):
    """What one guard says of one step's evidence."""

    PASS = "pass"
    FAIL = "fail"
    WAIT = "wait"


@dataclass(frozen=True)
class Arm:
    """One side's evidence in a step's window: results, those that failed, and their latencies (ms)."""

    results: int
    errors: int
    """Results with status ``error`` or ``expired``."""
    latencies_ms: Sequence[float] = ()


@dataclass(frozen=True)
class Judgement:
    """One guard's verdict, with the value it judged, its interval and the threshold."""

    guard: str
    verdict: Verdict
    value: float | None
    interval: tuple[float, float] | None
    threshold: float
    samples: int
    reason: str


def wilson(successes: int, n: int) -> tuple[float, float]:
    """The 95 % Wilson score interval of a rate ``successes / n`` (``(0, 1)`` with no samples)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + Z95 ** 2 / n
    centre = (p + Z95 ** 2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95 ** 2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def rate_difference(a: tuple[int, int], b: tuple[int, int]) -> tuple[float, tuple[float, float]]:
    """``rate(a) - rate(b)`` for ``(successes, n)`` pairs, with Newcombe's hybrid score interval (95 %)."""
    (xa, na), (xb, nb) = a, b
    pa, pb = (xa / na if na else 0.0), (xb / nb if nb else 0.0)
    la, ua = wilson(xa, na)
    lb, ub = wilson(xb, nb)
    diff = pa - pb
    low = diff - math.sqrt((pa - la) ** 2 + (ub - pb) ** 2)
    high = diff + math.sqrt((ua - pa) ** 2 + (pb - lb) ** 2)
    return diff, (low, high)


def quantile_interval(values: Sequence[float], q: float) -> tuple[float | None, tuple[float, float] | None]:
    """The ``q`` quantile of ``values`` and a distribution-free 95 % interval for it (None when too few).

    The interval is between two order statistics whose ranks bracket ``n q`` by the binomial
    spread (normal approximation); it needs enough values above the quantile to exist.
    """
    n = len(values)
    if n == 0:
        return None, None
    ordered = sorted(values)
    point = ordered[min(n - 1, max(0, math.ceil(n * q) - 1))]
    spread = Z95 * math.sqrt(n * q * (1 - q))
    low, high = math.floor(n * q - spread), math.ceil(n * q + spread)
    if low < 1 or high > n:
        return point, None
    return point, (ordered[low - 1], ordered[high - 1])


@dataclass(frozen=True)
class ErrorRateGuard:
    """The candidate's error rate (``error`` and ``expired``) at most ``margin`` above the incumbent's."""

    margin: float = 0.01
    name: str = "error_rate"

    def judge(self, candidate: Arm, incumbent: Arm) -> Judgement:
        diff, (low, high) = rate_difference((candidate.errors, candidate.results),
                                            (incumbent.errors, incumbent.results))
        verdict = Verdict.FAIL if low > self.margin else Verdict.PASS if high <= self.margin else Verdict.WAIT
        return Judgement(self.name, verdict, diff, (low, high), self.margin, candidate.results,
                         f"error rate {diff:+.3f} against the incumbent (95% CI {low:+.3f} to {high:+.3f}), "
                         f"allowed +{self.margin:.3f}")


@dataclass(frozen=True)
class LatencyGuard:
    """The candidate's ``quantile`` latency at most ``max_ratio`` times the incumbent's."""

    max_ratio: float = 1.5
    quantile: float = 0.99
    name: str = "latency_p99"

    def judge(self, candidate: Arm, incumbent: Arm) -> Judgement:
        c_point, c_ci = quantile_interval(candidate.latencies_ms, self.quantile)
        i_point, i_ci = quantile_interval(incumbent.latencies_ms, self.quantile)
        samples = len(candidate.latencies_ms)
        if c_point is None or i_point is None or c_ci is None or i_ci is None or i_ci[0] <= 0 or i_point <= 0:
            return Judgement(self.name, Verdict.WAIT, None, None, self.max_ratio, samples,
                             f"too few latencies for a p{self.quantile * 100:g} interval "
                             f"({samples} candidate, {len(incumbent.latencies_ms)} incumbent)")
        ratio, low, high = c_point / i_point, c_ci[0] / i_ci[1], c_ci[1] / i_ci[0]
        verdict = Verdict.FAIL if low > self.max_ratio else Verdict.PASS if high <= self.max_ratio else Verdict.WAIT
        return Judgement(self.name, verdict, ratio, (low, high), self.max_ratio, samples,
                         f"p{self.quantile * 100:g} latency {ratio:.2f}x the incumbent's (95% CI {low:.2f} to "
                         f"{high:.2f}), allowed {self.max_ratio:.2f}x")


@dataclass(frozen=True)
class AgreementGuard:
    """A shadow agreement rate (e.g. ``band_agrees``, ``top_k_overlap`` >= a bar) at least ``minimum``.

    Judged on ``agreeing`` of ``compared`` shadow comparisons; with no comparisons (the
    candidate was never shadowed) it passes, saying so.
    """

    metric: str
    minimum: float
    name: str = "agreement"

    def judge_counts(self, agreeing: int, compared: int) -> Judgement:
        """:func:`judge_agreement` on ``agreeing`` of ``compared`` boolean comparisons."""
        return judge_agreement(self, [True] * agreeing + [False] * (compared - agreeing))


Guard = ErrorRateGuard | LatencyGuard


def agreement_values(values: Sequence[object]) -> tuple[int, float, tuple[float, float]] | None:
    """How many values, their mean and its 95 % interval: a rate (Wilson) for booleans, else a normal mean."""
    kept = [v for v in values if isinstance(v, (bool, int, float)) and not isinstance(v, str)]
    if not kept:
        return None
    n = len(kept)
    if all(isinstance(v, bool) for v in kept):
        agreeing = sum(1 for v in kept if v)
        return n, agreeing / n, wilson(agreeing, n)
    floats = [float(v) for v in kept]
    mean = sum(floats) / n
    if n < 2:
        return n, mean, (-math.inf, math.inf)
    sd = math.sqrt(sum((v - mean) ** 2 for v in floats) / (n - 1))
    half = Z95 * sd / math.sqrt(n)
    return n, mean, (mean - half, mean + half)


def judge_agreement(guard: AgreementGuard, values: Sequence[object]) -> Judgement:
    """``guard`` on one agreement measure's values (booleans: the share agreeing; numbers: their mean)."""
    label = f"{guard.name}:{guard.metric}"
    summary = agreement_values(values)
    if summary is None:
        return Judgement(label, Verdict.PASS, None, None, guard.minimum, 0,
                         f"no shadow comparisons of {guard.metric}: not judged")
    n, mean, (low, high) = summary
    verdict = Verdict.FAIL if high < guard.minimum else Verdict.PASS if low >= guard.minimum else Verdict.WAIT
    return Judgement(label, verdict, mean, (low, high), guard.minimum, n,
                     f"{guard.metric} {mean:.3f} over {n} shadow comparisons (95% CI {low:.3f} to {high:.3f}), "
                     f"required {guard.minimum:.3f}")


GUARD_SYNTAX = "error_rate<=MARGIN, latency_pQQ<=RATIO (e.g. latency_p99<=1.5), agreement:METRIC>=MINIMUM"
_GUARD = re.compile(r"^\s*(?:(error_rate)|latency_p(\d{1,2}(?:\.\d+)?)|agreement:([A-Za-z_][\w]*))\s*"
                    r"(<=|>=)\s*([0-9]*\.?[0-9]+)\s*$")


def parse_guard(text: str) -> Guard | AgreementGuard:
    """A guard from its command-line form (see :data:`GUARD_SYNTAX`); raises ``ValueError`` saying why not."""
    match = _GUARD.match(text)
    if match is None:
        raise ValueError(f"guard {text!r}: expected one of {GUARD_SYNTAX}")
    error_rate, quantile, metric, op, number = match.groups()
    value = float(number)
    if metric is not None:
        if op != ">=":
            raise ValueError(f"guard {text!r}: an agreement guard is a minimum (agreement:{metric}>=X)")
        return AgreementGuard(metric, value)
    if op != "<=":
        raise ValueError(f"guard {text!r}: an error-rate or latency guard is a maximum (<=)")
    if error_rate is not None:
        if not 0 <= value < 1:
            raise ValueError(f"guard {text!r}: the error-rate margin is a share in [0, 1)")
        return ErrorRateGuard(margin=value)
    q = float(quantile) / 100
    if not 0.5 <= q < 1:
        raise ValueError(f"guard {text!r}: the latency quantile is between p50 and p99.9")
    if value < 1:
        raise ValueError(f"guard {text!r}: the latency ratio is at least 1 (the candidate no slower)")
    return LatencyGuard(max_ratio=value, quantile=q, name=f"latency_p{quantile}")


def guard_text(guard: Guard | AgreementGuard) -> str:
    """The command-line form of ``guard``: ``parse_guard(guard_text(g)) == g``."""
    if isinstance(guard, ErrorRateGuard):
        return f"error_rate<={guard.margin:g}"
    if isinstance(guard, LatencyGuard):
        return f"{guard.name}<={guard.max_ratio:g}"
    return f"agreement:{guard.metric}>={guard.minimum:g}"


DEFAULT_GUARDS: tuple[Guard, ...] = (ErrorRateGuard(), LatencyGuard())
"""The guards of a rollout started without ``--guard``: error rate at most +1 point, p99 at most 1.5x."""


def plan_steps(steps: Sequence[float], current: float | None) -> tuple[float, ...]:
    """The steps a rollout walks: increasing, ending at 100 (the promotion). Steps below ``current`` (the
    candidate's canary percentage already in force) are replaced by one step at it, so no step moves users off
    the candidate."""
    plan = tuple(float(s) for s in steps)
    if not plan or any(not 0 < s <= 100 for s in plan) or any(b <= a for a, b in zip(plan, plan[1:])):
        raise ValueError(f"steps {list(steps)}: percentages in (0, 100], increasing")
    if plan[-1] != 100:
        plan += (100.0,)
    if current and any(s < current for s in plan):
        plan = (current,) + tuple(s for s in plan if s > current) if current < 100 else (100.0,)
    return plan


class StepAction(StrEnum):
    """What a step does next."""

    ADVANCE = "advance"
    WAIT = "wait"
    ROLL_BACK = "roll_back"
    PAUSE = "pause"


@dataclass(frozen=True)
class StepDecision:
    """What a step's evidence decides, and every guard's judgement behind it."""

    action: StepAction
    judgements: tuple[Judgement, ...]
    reason: str


def decide_step(candidate: Arm, incumbent: Arm, guards: Sequence[Guard], *, elapsed_s: float, step_s: float,
                min_samples: int, max_samples: int, agreement: Sequence[Judgement] = ()) -> StepDecision:
    """The step's decision: roll back on any failed guard; advance once all pass after ``step_s`` and
    ``min_samples``; pause when the guards still cannot tell at ``max_samples``; otherwise wait."""
    judgements = tuple(g.judge(candidate, incumbent) for g in guards) + tuple(agreement)
    failed = [j for j in judgements if j.verdict is Verdict.FAIL]
    if failed:  # a failure is judged on its interval, so it needs neither the step's time nor its samples
        return StepDecision(StepAction.ROLL_BACK, judgements, "; ".join(f"{j.guard} failed: {j.reason}"
                                                                         for j in failed))
    if elapsed_s < step_s or candidate.results < min_samples:
        return StepDecision(StepAction.WAIT, judgements,
                            f"{elapsed_s:.0f} of {step_s:.0f} s, {candidate.results} of {min_samples} samples")
    undecided = [j for j in judgements if j.verdict is Verdict.WAIT]
    if not undecided:
        return StepDecision(StepAction.ADVANCE, judgements, "every guard passed")
    if candidate.results >= max_samples:
        return StepDecision(StepAction.PAUSE, judgements, f"still undecided after {candidate.results} samples: "
                            + "; ".join(j.reason for j in undecided))
    return StepDecision(StepAction.WAIT, judgements, "waiting for samples: " + "; ".join(j.reason for j in undecided))


def _with_objective(rules: Rules, name: str, **changes: object) -> Rules:
    objective = rules.objective(name)
    updated = dataclasses.replace(objective, **changes)  # type: ignore[arg-type]
    return dataclasses.replace(rules, version=rules.version + 1, objectives={**rules.objectives, name: updated})


def canary_rules(rules: Rules, objective: str, candidate: str, percent: float) -> Rules:
    """The next rules version with ``candidate`` as ``objective``'s canary at ``percent``.

    The canary range grows from the top of the bucket space (``Canary.start``), so users on the
    candidate at a lower percentage stay on it at a higher one.
    """
    if candidate not in rules.models:
        raise RulesError([f"objectives.{objective}.canary: candidate {candidate!r} is not placed on a shard "
                          f"in rules version {rules.version}"])
    if not 0 < percent <= 100:
        raise RulesError([f"objectives.{objective}.canary: a step is a percentage in (0, 100], not {percent}"])
    current = rules.objective(objective).canary
    if current is not None and current.model == candidate and current.percent > percent:
        raise RulesError([f"objectives.{objective}.canary: at {current.percent}%, a step down to {percent}% "
                          "would move users off the candidate; roll back instead"])
    return _with_objective(rules, objective, canary=Canary(candidate, percent))


def promoted_rules(rules: Rules, objective: str, candidate: str) -> Rules:
    """The next rules version with ``candidate`` as ``objective``'s default, no canary, and no shadow copies to it."""
    if candidate not in rules.models:
        raise RulesError([f"objectives.{objective}.default: candidate {candidate!r} is not placed on a shard"])
    shadow = tuple(e for e in rules.objective(objective).shadow if e.model != candidate)
    return _with_objective(rules, objective, default=candidate, canary=None, shadow=shadow)


def rolled_back_rules(rules: Rules, objective: str) -> Rules:
    """The next rules version with ``objective``'s canary removed: every user back on the incumbent default."""
    return _with_objective(rules, objective, canary=None)
