"""How the controller tells a hand-published rules version from its own, and keeps a hand-raised canary (pure)."""

from __future__ import annotations

import dataclasses

from routing import load_rules
from routing.rollout import canary_rules, promoted_rules
from routing.rules import Canary
from scoreline.settings import EXAMPLES_DIR
from streams.rollouts.records import Rollout, RolloutSpec, State, Step
from streams.rollouts.steps import adopt_canary, rules_conflict

RULES = load_rules(EXAMPLES_DIR / "rules.json")  # title-ranking@v2 a 10 % canary over v1
SPEC = RolloutSpec("title-ranking", "title-ranking@v2", (10.0, 50.0, 100.0), 60.0, 100, 5000, ())


def _rollout(step: int, published: dict[int, int]) -> Rollout:
    steps = [Step(p, rules_version=published.get(i)) for i, p in enumerate(SPEC.steps)]
    for i in range(step):
        steps[i].decision = "advance"
    return Rollout(id="r", spec=SPEC, incumbent="title-ranking@v1", state=State.RUNNING, steps=steps, step=step)


def _version(rules, version):
    return dataclasses.replace(rules, version=version)


def test_the_rollouts_own_version_and_unrelated_changes_are_no_conflict():
    at_10 = _version(canary_rules(RULES, "title-ranking", "title-ranking@v2", 10), 4)
    rollout = _rollout(0, {0: 4})
    assert rules_conflict(rollout, at_10) is None
    other = dataclasses.replace(at_10, version=5, objectives={**at_10.objectives, "fraud-score": dataclasses.replace(
        at_10.objective("fraud-score"), canary=Canary("fraud-score@v2", 30))})
    assert rules_conflict(rollout, other) is None  # another objective changed: carry on
    assert rules_conflict(rollout, _version(RULES, 3)) is None  # the rules topic not yet read up to version 4


def test_a_hand_made_change_to_the_objective_is_a_conflict_that_names_its_version():
    rollout = _rollout(0, {0: 4})
    by_hand = _version(canary_rules(RULES, "title-ranking", "title-ranking@v2", 35), 5)
    why = rules_conflict(rollout, by_hand)
    assert why is not None and why.startswith("rules version 5 changed title-ranking")
    assert "title-ranking@v2 at 35%" in why and "title-ranking@v2 at 10% in version 4" in why
    promoted_by_hand = _version(promoted_rules(RULES, "title-ranking", "title-ranking@v2"), 5)
    assert "default title-ranking@v2" in rules_conflict(rollout, promoted_by_hand)
    gone = dataclasses.replace(RULES, version=5, objectives={k: v for k, v in RULES.objectives.items()
                                                            if k != "title-ranking"})
    assert "has no objective title-ranking" in rules_conflict(rollout, gone)


def test_before_a_step_the_previous_step_is_checked_unless_the_step_was_resumed():
    rollout = _rollout(1, {0: 4})  # step 10 % advanced; 50 % about to be published
    by_hand = _version(canary_rules(RULES, "title-ranking", "title-ranking@v2", 35), 5)
    assert rules_conflict(rollout, by_hand, before_step=True) is not None
    rollout.current.resumed = True  # `rollout resume` accepted the rules in force
    assert rules_conflict(rollout, by_hand, before_step=True) is None
    assert rules_conflict(_rollout(0, {}), by_hand, before_step=True) is None  # the first step: nothing published


def test_a_hand_raised_canary_is_where_the_step_begins():
    rollout = _rollout(1, {0: 4})
    adopt_canary(rollout, canary_rules(RULES, "title-ranking", "title-ranking@v2", 60))
    assert [s.percent for s in rollout.steps] == [10, 60, 100] and rollout.current.percent == 60
    rollout = _rollout(1, {0: 4})
    adopt_canary(rollout, canary_rules(RULES, "title-ranking", "title-ranking@v2", 20))
    assert [s.percent for s in rollout.steps] == [10, 50, 100]  # below the step: the step as planned
    adopt_canary(rollout, canary_rules(RULES, "title-ranking", "churn-risk@v2", 80))
    assert [s.percent for s in rollout.steps] == [10, 50, 100]  # another model's canary: not the candidate's
