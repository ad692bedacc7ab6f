"""Guarded rollouts, the pure part: guards judge on their intervals, steps publish monotone canaries (no broker)."""

from __future__ import annotations

import random

import pytest

from routing import bucket_of, load_rules, parse_rules, rules_to_doc
from routing.errors import RulesError
from routing.rollout import (
    AgreementGuard,
    Arm,
    ErrorRateGuard,
    LatencyGuard,
    StepAction,
    Verdict,
    canary_rules,
    decide_step,
    guard_text,
    judge_agreement,
    parse_guard,
    plan_steps,
    promoted_rules,
    quantile_interval,
    rate_difference,
    rolled_back_rules,
    wilson,
)
from scoreline.settings import EXAMPLES_DIR


def _latencies(n: int, scale: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [scale * rng.lognormvariate(0, 0.4) for _ in range(n)]


def test_wilson_and_the_difference_of_two_rates():
    low, high = wilson(5, 100)
    assert 0.02 < low < 0.05 < high < 0.12
    assert wilson(0, 0) == (0.0, 1.0)
    diff, (dlow, dhigh) = rate_difference((30, 100), (1, 100))
    assert diff == pytest.approx(0.29) and 0.15 < dlow < diff < dhigh < 0.45


def test_a_quantile_interval_needs_values_above_the_quantile():
    assert quantile_interval(list(range(50)), 0.99)[1] is None  # too few for a p99 interval
    point, interval = quantile_interval([float(v) for v in range(1, 2001)], 0.99)
    assert point == 1980.0 and interval is not None and interval[0] < 1980 < interval[1]


def test_error_guard_fails_a_candidate_failing_a_third_and_passes_a_healthy_one():
    guard = ErrorRateGuard(margin=0.01)
    assert guard.judge(Arm(300, 100), Arm(3000, 3)).verdict is Verdict.FAIL
    assert guard.judge(Arm(3000, 2), Arm(3000, 3)).verdict is Verdict.PASS
    assert guard.judge(Arm(20, 0), Arm(3000, 3)).verdict is Verdict.WAIT  # 20 samples cannot tell 1 %


def test_latency_guard_on_a_three_times_slower_candidate():
    guard = LatencyGuard(max_ratio=1.5)
    incumbent = Arm(3000, 0, _latencies(3000, 5.0, 1))
    slow = guard.judge(Arm(1000, 0, _latencies(1000, 15.0, 2)), incumbent)
    assert slow.verdict is Verdict.FAIL and slow.value == pytest.approx(3.0, rel=0.25)
    same = guard.judge(Arm(3000, 0, _latencies(3000, 5.0, 3)), incumbent)
    assert same.verdict is Verdict.PASS
    assert guard.judge(Arm(40, 0, _latencies(40, 5.0, 4)), incumbent).verdict is Verdict.WAIT


def test_agreement_guard_judges_its_interval_and_passes_without_shadow_evidence():
    guard = AgreementGuard("band_agrees", minimum=0.9)
    assert guard.judge_counts(980, 1000).verdict is Verdict.PASS
    assert guard.judge_counts(700, 1000).verdict is Verdict.FAIL
    assert guard.judge_counts(9, 10).verdict is Verdict.WAIT
    assert guard.judge_counts(0, 0).verdict is Verdict.PASS


def test_a_step_waits_for_its_time_and_samples_advances_rolls_back_or_pauses():
    guards = [ErrorRateGuard(0.01), LatencyGuard(1.5)]
    incumbent = Arm(5000, 5, _latencies(5000, 5.0, 5))
    healthy = Arm(2000, 2, _latencies(2000, 5.0, 6))
    kwargs = dict(step_s=60.0, min_samples=500, max_samples=20_000)
    assert decide_step(healthy, incumbent, guards, elapsed_s=10, **kwargs).action is StepAction.WAIT
    assert decide_step(healthy, incumbent, guards, elapsed_s=61, **kwargs).action is StepAction.ADVANCE
    failing = Arm(600, 200, _latencies(600, 5.0, 7))
    decision = decide_step(failing, incumbent, guards, elapsed_s=5, **kwargs)  # a failure needs no full step
    assert decision.action is StepAction.ROLL_BACK and "error_rate failed" in decision.reason
    close = Arm(600, 6, _latencies(600, 5.0, 8))  # 1 % against 0.1 %: the interval straddles the margin
    assert decide_step(close, incumbent, guards, elapsed_s=61, **kwargs).action is StepAction.WAIT
    assert decide_step(close, incumbent, guards, elapsed_s=61, step_s=60.0, min_samples=500,
                       max_samples=600).action is StepAction.PAUSE


def test_canary_steps_keep_users_on_the_candidate_and_end_as_the_default():
    example = load_rules(EXAMPLES_DIR / "rules.json")  # title-ranking@v2 is a 10 % canary there
    with pytest.raises(RulesError, match="step down"):
        canary_rules(example, "title-ranking", "title-ranking@v2", 5)
    rules = rolled_back_rules(example, "title-ranking")
    objective = rules.objective("title-ranking")
    users = [f"u{i}" for i in range(5000)]

    def on_candidate(r):
        canary = r.objective("title-ranking").canary
        return {u for u in users if canary is not None and bucket_of(objective.salt, u) >= canary.start}

    steps = [canary_rules(rules, "title-ranking", "title-ranking@v2", 5)]
    for percent in (25, 50):
        steps.append(canary_rules(steps[-1], "title-ranking", "title-ranking@v2", percent))
    assert [s.version for s in steps] == [rules.version + 1, rules.version + 2, rules.version + 3]
    shares = [len(on_candidate(s)) / len(users) for s in steps]
    assert shares == pytest.approx([0.05, 0.25, 0.50], abs=0.03)
    assert on_candidate(steps[0]) <= on_candidate(steps[1]) <= on_candidate(steps[2])  # monotone
    done = promoted_rules(steps[-1], "title-ranking", "title-ranking@v2")
    assert done.objective("title-ranking").default == "title-ranking@v2"
    assert done.objective("title-ranking").canary is None
    assert all(e.model != "title-ranking@v2" for e in done.objective("title-ranking").shadow)  # evidence done
    for version in (*steps, done):
        assert parse_rules(rules_to_doc(version)).objective("title-ranking") == version.objective("title-ranking")
    back = rolled_back_rules(steps[1], "title-ranking")
    assert back.objective("title-ranking").canary is None
    assert back.objective("title-ranking").default == objective.default
    with pytest.raises(RulesError, match="not placed"):
        canary_rules(rules, "title-ranking", "title-ranking@v9", 5)


@pytest.mark.parametrize("text", ["error_rate<=0.01", "latency_p99<=1.5", "latency_p90<=2",
                                  "agreement:top_k_overlap>=0.6", "agreement:band_agrees>=0.95"])
def test_a_guard_reads_back_from_its_command_line_form(text):
    guard = parse_guard(text)
    assert parse_guard(guard_text(guard)) == guard
    assert guard_text(parse_guard(" " + text.replace("<=", " <= ") + " ")) == guard_text(guard)


@pytest.mark.parametrize("text, why", [
    ("error_rate>=0.01", "maximum"), ("latency_p99<=0.9", "at least 1"), ("latency_p30<=2", "p50"),
    ("agreement:top_k_overlap<=0.6", "minimum"), ("error_rate<=1.5", "share"), ("p99 under 2", "expected one of"),
])
def test_a_bad_guard_says_what_is_wrong(text, why):
    with pytest.raises(ValueError, match=why):
        parse_guard(text)


def test_steps_start_at_the_candidates_canary_and_end_in_the_promotion():
    assert plan_steps([5, 25, 50, 100], None) == (5, 25, 50, 100)
    assert plan_steps([5, 25, 50], None) == (5, 25, 50, 100)
    assert plan_steps([5, 25, 50, 100], 10) == (10, 25, 50, 100)  # a 5 % step would move users off it
    assert plan_steps([5, 25, 50, 100], 25) == (25, 50, 100)
    assert plan_steps([5, 25], 100) == (100,)
    assert plan_steps([20, 60], 10) == (20, 60, 100)  # every step above the canary: as asked
    for bad in ([], [25, 5], [0, 50], [50, 150], [5, 5]):
        with pytest.raises(ValueError, match="increasing"):
            plan_steps(bad, None)


def test_agreement_is_judged_on_its_interval_for_booleans_and_for_means():
    guard = AgreementGuard("band_agrees", 0.9)
    assert judge_agreement(guard, [True] * 190 + [False] * 10).verdict is Verdict.PASS
    assert judge_agreement(guard, [True] * 60 + [False] * 40).verdict is Verdict.FAIL
    assert judge_agreement(guard, [True] * 9 + [False] * 1).verdict is Verdict.WAIT
    assert judge_agreement(guard, []).verdict is Verdict.PASS  # never shadowed: said, not judged
    overlap = AgreementGuard("top_k_overlap", 0.6)
    rng = random.Random(3)
    assert judge_agreement(overlap, [rng.uniform(0.7, 0.9) for _ in range(100)]).verdict is Verdict.PASS
    assert judge_agreement(overlap, [rng.uniform(0.2, 0.4) for _ in range(100)]).verdict is Verdict.FAIL
    assert judge_agreement(overlap, [0.9]).verdict is Verdict.WAIT
    assert judge_agreement(overlap, [None, "x"]).samples == 0
