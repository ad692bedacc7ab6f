"""route(): precedence, rejections, shard keys, shadows; explain and simulate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import routing
from routing import (
    Decision,
    RequestView,
    RoutingError,
    Rules,
    bucket_of,
    explain,
    extract_shard_key,
    parse_rules,
    route,
    simulate,
)

DEMO_REPLY = "scoreline.replies.demo"
EXAMPLES = Path(__file__).resolve().parents[2] / "scoreline" / "examples"


def view(user: str | None = "u-1", *, objective: str = "title-ranking", client: str = "demo",
         reply_to: str = DEMO_REPLY, country: str = "US", model: str | None = None,
         request_id: str = "r-1", context: Any = "default") -> RequestView:
    if context == "default":
        context = {"user_id": user, "country": country}
    return RequestView(request_id, objective, client, reply_to, user, context, model)


def find_user(rules: Rules, predicate, objective: str = "title-ranking") -> str:
    salt = rules.objectives[objective].salt
    return next(f"u-{i}" for i in range(100_000) if predicate(bucket_of(salt, f"u-{i}")))


# -- precedence


def test_override_beats_everything(example_rules: Rules) -> None:
    user = find_user(example_rules, lambda b: b < 2000)  # in the experiment
    d = route(view(user, model="fraud-score@v2"), example_rules)
    assert (d.model, d.shard, d.reason, d.cell, d.bucket) == ("fraud-score@v2", "s1", "override", None, None)


def test_experiment_beats_canary_and_default(example_rules: Rules) -> None:
    user = find_user(example_rules, lambda b: b < 2000)
    d = route(view(user), example_rules)
    assert d.reason == "experiment:tr-2026-11"
    assert d.cell in ("1", "2")
    assert d.model == {"1": "title-ranking@v1", "2": "title-ranking@v2"}[d.cell]


def test_experiment_needs_its_match(example_rules: Rules) -> None:
    user = find_user(example_rules, lambda b: b < 2000)
    d = route(view(user, country="DE"), example_rules)
    assert (d.reason, d.model, d.cell) == ("default", "title-ranking@v1", None)


def test_canary(example_rules: Rules) -> None:
    user = find_user(example_rules, lambda b: b >= 9000)
    d = route(view(user), example_rules)
    assert (d.reason, d.model, d.shard) == ("canary", "title-ranking@v2", "s2")


def test_default(example_rules: Rules) -> None:
    user = find_user(example_rules, lambda b: 2000 <= b < 9000)
    d = route(view(user), example_rules)
    assert (d.reason, d.model, d.shard, d.rules_version, d.shard_key) == (
        "default", "title-ranking@v1", "s1", 1, user)


def test_compatible_experiments_first_declared_wins(example_doc: dict) -> None:
    example_doc["objectives"]["title-ranking"]["experiments"].append(
        {"id": "tr-tv", "allocation_percent": 20, "match": {"device": ["tv"]},
         "cells": {"x": "title-ranking@v2"}, "compatible_with": ["tr-2026-11"]})
    rules = parse_rules(example_doc)
    user = find_user(rules, lambda b: b < 2000)
    both = {"user_id": user, "country": "US", "device": "tv"}
    assert route(view(user, context=both), rules).reason == "experiment:tr-2026-11"
    tv_only = {"user_id": user, "country": "DE", "device": "tv"}
    assert route(view(user, context=tv_only), rules).reason == "experiment:tr-tv"


def test_weighted_cells(example_doc: dict) -> None:
    exp = example_doc["objectives"]["title-ranking"]["experiments"][0]
    exp["cells"] = {"a": {"model": "title-ranking@v1", "weight": 3}, "b": "title-ranking@v2"}
    exp["allocation_percent"] = 80
    del exp["match"]
    del example_doc["objectives"]["title-ranking"]["canary"]
    out = simulate(parse_rules(example_doc), "title-ranking", 20_000)
    assert out["models"]["title-ranking@v1"]["expected"] == pytest.approx(0.2 + 0.8 * 0.75)


# -- rejections


@pytest.mark.parametrize(
    ("changes", "code", "field"),
    [
        ({"client": "ghost"}, "unknown_client", "client"),
        ({"reply_to": "scoreline.replies.homepage"}, "forbidden_reply_to", "reply_to"),
        ({"objective": "nope"}, "unknown_objective", "objective"),
        ({"client": "homepage", "reply_to": "scoreline.replies.homepage", "objective": "fraud-score"},
         "forbidden_objective", "objective"),
        ({"client": "homepage", "reply_to": "scoreline.replies.homepage.x", "model": "title-ranking@v2"},
         "forbidden_override", "model"),
        ({"model": "title-ranking@v9"}, "unknown_model", "model"),
    ],
)
def test_rejections(example_rules: Rules, changes: dict, code: str, field: str) -> None:
    with pytest.raises(RoutingError) as info:
        route(view()._replace(**changes), example_rules)
    assert (info.value.code, info.value.field) == (code, field)
    assert info.value.to_error_info().code == code


def test_prefix_reply_topic_is_allowed(example_rules: Rules) -> None:
    v = view(client="homepage", reply_to="scoreline.replies.homepage-eu-1")
    assert route(v, example_rules).objective == "title-ranking"


# -- shard keys


def test_no_shard_key_gets_default(example_rules: Rules) -> None:
    d = route(view(None, context={"country": "US"}), example_rules)
    assert (d.reason, d.model, d.bucket, d.shard_key) == ("default", "title-ranking@v1", None, None)


def test_shard_key_read_from_context_when_view_has_none(example_rules: Rules) -> None:
    d = route(view(None, context={"user_id": "u-1", "country": "US"}), example_rules)
    assert d == route(view("u-1"), example_rules)


def test_headers_only_routing(example_rules: Rules) -> None:
    d = route(view("u-1", objective="fraud-score", context=None), example_rules)
    assert d.model == "fraud-score@v1"


def test_headers_only_for_context_objective_is_a_bug(example_rules: Rules) -> None:
    user = find_user(example_rules, lambda b: b < 2000)
    with pytest.raises(ValueError, match="needs_context"):
        route(view(user, context=None), example_rules)


@pytest.mark.parametrize(
    ("context", "path", "expected"),
    [
        ({"user_id": "u-1"}, "context.user_id", "u-1"),
        ({"user_id": 42}, "context.user_id", "42"),
        ({"user_id": True}, "context.user_id", "true"),
        ({"account": {"id": 7}}, "context.account.id", "7"),
        ({}, "context.user_id", None),
        ({"user_id": None}, "context.user_id", None),
        ({"user_id": ""}, "context.user_id", None),
        ({"user_id": ["a"]}, "context.user_id", None),
        ({"account": "x"}, "context.account.id", None),
    ],
)
def test_extract_shard_key(context: dict, path: str, expected: str | None) -> None:
    assert extract_shard_key(context, path) == expected


# -- shadows


def test_shadow_never_duplicates_primary(example_rules: Rules) -> None:
    for i in range(2000):
        d = route(view(f"u-{i}", request_id=f"r-{i}"), example_rules)
        assert d.model not in d.shadows


def test_shadow_all(example_rules: Rules) -> None:
    rules = routing.load_rules(EXAMPLES / "rules-shadow-all.json")
    d = route(view(context={"user_id": "u-1"}), rules)
    assert (d.model, d.shadows) == ("title-ranking@v1", ("title-ranking@v2",))


def test_full_shadow_on_fraud_score(example_rules: Rules) -> None:
    d = route(view(objective="fraud-score"), example_rules)
    assert d.shadows == ("fraud-score@v2",)


# -- explain and simulate


def test_explain_is_deterministic_and_json(example_rules: Rules) -> None:
    user = find_user(example_rules, lambda b: b < 2000)
    v = view(user)
    first = explain(v, example_rules)
    assert first == explain(v, example_rules)
    assert json.loads(json.dumps(first, sort_keys=True)) == first
    assert first["decision"]["reason"] == "experiment:tr-2026-11"
    exp = first["experiments"][0]
    assert exp["in_allocation"] and exp["match"]["held"] and exp["decided"]
    assert first["decision"]["cell"] == exp["cell"]


def test_explain_agrees_with_route_on_every_decision_and_shadow_copy(example_rules: Rules) -> None:
    """One definition of the shadow sample: explain says "sampled" and "copied" exactly where route copies."""
    copied_somewhere = set()
    for objective in ("title-ranking", "fraud-score"):
        for i in range(400):
            v = view(f"u-{i}", objective=objective, request_id=f"r-{i}")
            decision = route(v, example_rules)
            out = explain(v, example_rules)
            assert out["decision"]["model"] == decision.model and out["decision"]["cell"] == decision.cell
            assert tuple(s["model"] for s in out["shadow"] if s["copied"]) == decision.shadows
            for s in out["shadow"]:
                entry = next(e for e in example_rules.objectives[objective].shadow if e.model == s["model"])
                assert s["sampled"] == routing.shadow_sampled(v.request_id, entry.salt, entry.percent)
                assert s["copied"] == (s["sampled"] and not s["same_as_primary"])
            copied_somewhere.update(decision.shadows)
    # Partial sampling (title-ranking at 40%) and full sampling (fraud-score) were both exercised.
    assert copied_somewhere == {"title-ranking@v2", "fraud-score@v2"}


def test_explain_reports_rejections(example_rules: Rules) -> None:
    out = explain(view(client="ghost"), example_rules)
    assert out["decision"] is None
    assert out["error"]["code"] == "unknown_client"


def test_simulate_shape(example_rules: Rules) -> None:
    out = simulate(example_rules, "title-ranking", 1000)
    assert out["objective"] == "title-ranking" and out["users"] == 1000 and out["rules_version"] == 1
    assert out["context"] == {"country": "US"}
    assert out["models"]["title-ranking@v1"]["expected"] == 0.8
    assert out["shadow"]["title-ranking@v2"]["expected"] == 0.4


def test_simulate_with_a_context_that_fails_the_match(example_rules: Rules) -> None:
    out = simulate(example_rules, "title-ranking", 1000, context={"country": "DE"}, client="homepage")
    assert out["models"]["title-ranking@v1"]["expected"] == 0.9
    assert out["models"]["title-ranking@v2"]["expected"] == 0.1


def test_decision_fields() -> None:
    assert Decision._fields == (
        "objective", "model", "shard", "cell", "reason", "bucket", "shadows", "rules_version", "shard_key")
    assert RequestView._fields == (
        "request_id", "objective", "client", "reply_to", "shard_key", "context", "model")
