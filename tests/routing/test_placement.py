"""The placement planner: models onto shards by memory and traffic, moving as little as it can."""

from __future__ import annotations

import dataclasses

import pytest

from routing import parse_rules
from routing.placement import plan_capacity, plan_placement, rules_traffic


def rules_with(models: dict[str, str], shards=("s1", "s2"), shadow: tuple[str, ...] = ()):
    """One objective per model (each its default), so every model gets an equal share of traffic."""
    objectives = {f"o{i}": {"shard_key": "context.user_id", "default": m,
                            "shadow": [{"model": s, "percent": 10} for s in shadow]}
                  for i, m in enumerate(m for m in models if m not in shadow)}
    return dataclasses.replace(parse_rules({
        "shards": {s: {} for s in shards}, "models": {m: {"shard": s} for m, s in models.items()},
        "clients": {"demo": {"objectives": ["*"], "reply_topics": ["r"]}}, "objectives": objectives}), version=3)


def test_traffic_shares_follow_the_rules_allocation():
    rules = parse_rules({
        "shards": {"s1": {}}, "models": {"a@v1": {"shard": "s1"}, "b@v1": {"shard": "s1"}, "c@v1": {"shard": "s1"}},
        "clients": {"demo": {"objectives": ["*"], "reply_topics": ["r"]}},
        "objectives": {"o": {"shard_key": "context.user_id", "default": "a@v1",
                             "canary": {"model": "b@v1", "percent": 25},
                             "shadow": [{"model": "c@v1", "percent": 50}]}}})
    assert rules_traffic(rules) == {"a@v1": pytest.approx(0.75), "b@v1": pytest.approx(0.25)}  # c only shadows


def test_everything_on_one_shard_is_spread_by_memory_and_traffic():
    models = {f"m{i}@v1": "s1" for i in range(6)}
    memory = {"m0@v1": 600, "m1@v1": 300, "m2@v1": 300, "m3@v1": 100, "m4@v1": 100, "m5@v1": 100}
    plan = plan_placement(rules_with(models), memory)
    assert plan.before["s1"].memory == 1500 and plan.before["s2"].memory == 0
    assert {s: load.memory for s, load in plan.after.items()} == {"s1": 800, "s2": 700}
    assert plan.after["s1"].models + plan.after["s2"].models == 6
    assert plan.imbalance("before") == pytest.approx(2.0) and plan.imbalance("after") < 1.2
    assert all(was == "s1" for was, _ in plan.moves.values()) and plan.moves


def test_a_balanced_placement_moves_nothing():
    models = {"a@v1": "s1", "b@v1": "s2", "c@v1": "s1", "d@v1": "s2"}
    plan = plan_placement(rules_with(models), {m: 100 for m in models})
    assert plan.moves == {} and plan.placement == models


def test_more_shards_take_models_and_shadow_only_models_stay_where_they_are():
    models = {"a@v1": "s1", "b@v1": "s1", "c@v1": "s2", "x@v1": "s2"}
    plan = plan_placement(rules_with(models, shadow=("x@v1",)), {m: 100 for m in models}, shards=("s1", "s2", "s3"))
    assert sorted(plan.placement[m] for m in ("a@v1", "b@v1", "c@v1")) == ["s1", "s2", "s3"]
    assert plan.placement["x@v1"] == "s2" and "x@v1" not in plan.moves
    assert plan.after["s3"].models == 1


def test_recent_traffic_outweighs_the_allocation():
    models = {"a@v1": "s1", "b@v1": "s1", "c@v1": "s2", "d@v1": "s2"}
    plan = plan_placement(rules_with(models), {m: 100 for m in models},
                          traffic={"a@v1": 900, "b@v1": 900, "c@v1": 10, "d@v1": 10})
    assert plan.placement["a@v1"] != plan.placement["b@v1"]  # the two busy models no longer share a shard


def test_capacity_for_a_forecast_splits_it_over_the_shards_by_their_share():
    capacity = plan_capacity({"s1": 0.6, "s2": 0.4}, 5000, router_rps=3000, worker_rps=800)
    assert capacity.router.replicas == 3  # 5000 / (3000 x 0.7) = 2.4
    assert (capacity.shards["s1"].rps, capacity.shards["s2"].rps) == (3000.0, 2000.0)
    assert capacity.shards["s1"].replicas == 6  # 3000 / (800 x 0.7) = 5.4
    assert capacity.shards["s1"].partitions == 12  # room for the autoscaler to double it
    assert capacity.shards["s1"].lag_threshold == 1600  # 800 req/s for a 2 s drain


def test_capacity_never_plans_no_replica_and_refuses_nonsense():
    capacity = plan_capacity({"s1": 1.0, "idle": 0.0}, 0, router_rps=3000, worker_rps=800)
    assert capacity.shards["idle"].replicas == capacity.router.replicas == 1
    with pytest.raises(ValueError, match="utilisation"):
        plan_capacity({"s1": 1.0}, 10, router_rps=1, worker_rps=1, utilisation=0)
