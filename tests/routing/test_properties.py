"""Property tests: stickiness, monotone ramps, and observed shares against expected ones."""

from __future__ import annotations

import copy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routing import RequestView, Rules, parse_rules, route, rules_to_doc, simulate

users = st.one_of(st.integers(min_value=0, max_value=10**9).map(lambda i: f"u-{i}"), st.text(min_size=1))
countries = st.sampled_from(["US", "CA", "DE", "BR"])
percents = st.integers(min_value=0, max_value=10_000).map(lambda b: b / 100)


def _view(user: str, country: str, request_id: str = "r") -> RequestView:
    return RequestView(request_id, "title-ranking", "demo", "scoreline.replies.demo", user,
                       {"user_id": user, "country": country})


@given(user=users, country=countries, request_id=st.text())
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_sticky_across_calls_and_reparsed_rules(example_rules: Rules, user: str, country: str,
                                                request_id: str) -> None:
    reparsed = parse_rules(rules_to_doc(example_rules))
    first = route(_view(user, country, request_id), example_rules)
    assert route(_view(user, country, request_id), example_rules) == first
    assert route(_view(user, country, request_id), reparsed) == first


@given(user=users, a=percents, b=percents)
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_canary_ramp_is_monotone(example_doc: dict, user: str, a: float, b: float) -> None:
    low, high = sorted((a, b))
    example_doc["objectives"]["title-ranking"].pop("experiments", None)

    def canary_at(percent: float) -> bool:
        doc = copy.deepcopy(example_doc)
        doc["objectives"]["title-ranking"]["canary"]["percent"] = percent
        return route(_view(user, "US"), parse_rules(doc)).reason == "canary"

    if canary_at(low):
        assert canary_at(high)


@given(user=users, a=percents, b=percents)
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_experiment_ramp_keeps_cells(example_doc: dict, user: str, a: float, b: float) -> None:
    low, high = sorted((min(a, 90.0), min(b, 90.0)))

    def decide(percent: float):
        doc = copy.deepcopy(example_doc)
        doc["objectives"]["title-ranking"]["experiments"][0]["allocation_percent"] = percent
        return route(_view(user, "US"), parse_rules(doc))

    before = decide(low)
    if before.reason.startswith("experiment:"):
        assert decide(high).cell == before.cell


@given(case=st.sampled_from([
    ("title-ranking", None, None),
    ("title-ranking", {"country": "CA"}, "homepage"),
    ("title-ranking", {"country": "DE"}, "demo"),
    ("fraud-score", None, None),
]))
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_observed_shares_match_expected(example_rules: Rules, case) -> None:
    objective, context, client = case
    out = simulate(example_rules, objective, 100_000, context=context, client=client)
    assert abs(sum(m["observed"] for m in out["models"].values()) - 1) < 1e-3
    for share in [*out["models"].values(), *out["shadow"].values()]:
        assert abs(share["observed"] - share["expected"]) <= 0.01, out
