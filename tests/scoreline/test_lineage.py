"""The lineage graph is pure: rules + manifests + fact sources in, graph, tree and impact out."""

from __future__ import annotations

import pytest

from routing import load_rules, parse_rules
from scoreline.lineage import FactSource, LineageError, build_lineage, model_uses, parse_target, shard_key_fields
from scoreline.settings import EXAMPLES_DIR
from workflows import InMemoryFactStore, ModelRegistry, default_models_dir

FACTS = {"user_embedding": FactSource("user_id", "facts/user_embedding.npz"),
         "title_availability": FactSource("title_id", "facts/title_availability.json"),
         "user_profile": FactSource("user_id", "facts/user_profile.npz"),
         "user_txn_history": FactSource("user_id", "facts/user_txn_history.npz")}


@pytest.fixture(scope="module")
def manifests():
    registry = ModelRegistry(default_models_dir(), InMemoryFactStore())
    return [registry.manifest(i) for i in registry.ids()]


@pytest.fixture(scope="module")
def rules():
    return load_rules(EXAMPLES_DIR / "rules.json")


@pytest.fixture(scope="module")
def lineage(rules, manifests):
    return build_lineage(rules, manifests, FACTS, lambda f: f"scoreline.facts.{f}")


def test_objective_to_models_with_their_roles(lineage) -> None:
    assert lineage.rules_version == 1
    assert lineage.objectives["title-ranking"]["models"] == {
        "title-ranking@v1": ["default", "experiment tr-2026-11 cell 1 (20%)"],
        "title-ranking@v2": ["experiment tr-2026-11 cell 2 (20%)", "canary 10%", "shadow 50%"],
    }
    assert lineage.objectives["fraud-score"]["models"] == {"fraud-score@v1": ["default"],
                                                           "fraud-score@v2": ["shadow 100%"]}


def test_models_carry_workflow_facts_and_shard(lineage) -> None:
    v2 = lineage.models["title-ranking@v2"]
    assert (v2["workflow"], v2["shard"]) == ("title_ranking", "s2")
    assert set(v2["facts"]) == {"user_embedding", "title_availability"}
    assert lineage.models["fraud-score@v1"]["shard"] == "s2"


def test_facts_lead_to_topics_and_files_with_their_scope(lineage) -> None:
    emb = lineage.facts["user_embedding"]
    assert emb == {"key": "user_id", "scope": "shard", "topic": "scoreline.facts.user_embedding",
                   "file": "facts/user_embedding.npz", "models": ["title-ranking@v1", "title-ranking@v2"]}
    assert lineage.facts["title_availability"]["scope"] == "global"


def test_edges_chain_objective_rules_model_workflow_fact_topic(lineage) -> None:
    edges = {(e["from"], e["to"]) for e in lineage.edges()}
    chain = ["objective:fraud-score", "rules:v1", "model:fraud-score@v2", "workflow:fraud_score",
             "fact:user_txn_history", "topic:scoreline.facts.user_txn_history"]
    assert all(step in edges for step in zip(chain, chain[1:]))
    assert ("fact:user_txn_history", "file:facts/user_txn_history.npz") in edges


def test_impact_of_a_fact_lists_models_and_objectives(lineage) -> None:
    impact = lineage.impact("fact", "user_embedding")
    assert impact["models"] == ["title-ranking@v1", "title-ranking@v2"]
    assert impact["objectives"] == ["title-ranking"]
    assert {"objective": "title-ranking", "role": "canary 10%", "path": "objectives.title-ranking.canary.model",
            "model": "title-ranking@v2"} in impact["uses"]
    assert lineage.impact("fact", "user_profile")["objectives"] == ["churn-risk", "fraud-score"]


def test_impact_of_a_model(lineage) -> None:
    impact = lineage.impact("model", "fraud-score@v2")
    assert impact["objectives"] == ["fraud-score"]
    assert [u["path"] for u in impact["uses"]] == ["objectives.fraud-score.shadow[0].model"]


def test_unrouted_models_are_listed_not_hidden(manifests) -> None:
    rules = load_rules(EXAMPLES_DIR / "rules-shadow-all.json")
    lineage = build_lineage(rules, manifests, FACTS, lambda f: f"x.facts.{f}")
    impact = lineage.impact("fact", "user_profile")
    assert impact["objectives"] == []
    assert impact["unrouted_models"] == ["churn-risk@v1", "churn-risk@v2", "fraud-score@v1", "fraud-score@v2"]
    assert lineage.models["fraud-score@v1"]["shard"] is None
    assert "not routed by rules v" in lineage.render()


def test_bad_targets_name_the_flag(lineage) -> None:
    for text in ("user_embedding", "table:x", "fact:"):
        with pytest.raises(LineageError, match="--impact"):
            parse_target(text)
    with pytest.raises(LineageError, match="no fact 'nope'"):
        lineage.impact("fact", "nope")
    assert parse_target("model:a@v1") == ("model", "a@v1")


def test_render_is_a_tree(lineage) -> None:
    text = lineage.render()
    assert text.splitlines()[0] == "lineage (rules version 1)"
    assert "├── objective title-ranking  (shard key context.user_id)" in text
    assert "topic scoreline.facts.user_embedding" in text and "file facts/user_embedding.npz" in text


def test_model_uses_and_shard_key_fields(rules) -> None:
    assert [u.path for u in model_uses(rules, "title-ranking@v1")] == [
        "objectives.title-ranking.default", "objectives.title-ranking.experiments[0].cells.1"]
    assert shard_key_fields(rules) == {"user_id"}
    doc = {"shards": {"s": {}}, "models": {"m@1": {"shard": "s"}}, "clients": {},
           "objectives": {"o": {"shard_key": "context.account", "default": "m@1"}}}
    assert shard_key_fields(parse_rules(doc)) == {"account"}


def test_each_judged_rollout_step_is_model_to_evidence_to_rules_version(lineage) -> None:
    from scoreline.lineage import rollout_edges

    rollout = {"id": "r1", "objective": "title-ranking", "candidate": "title-ranking@v2", "state": "promoted",
               "final_rules_version": 9, "steps": [
                   {"percent": 10, "rules_version": 7, "decision": "advance",
                    "judgements": [{"guard": "error_rate", "verdict": "pass"}]},
                   {"percent": 50, "rules_version": 8, "decision": "advance", "judgements": []},
                   {"percent": 100, "rules_version": 9, "decision": "promoted", "judgements": []}]}
    edges = {(e["from"], e["to"], e["label"]) for e in rollout_edges([rollout])}
    assert ("model:title-ranking@v2", "evidence:r1@10%", "title-ranking: judged at 10% (error_rate pass)") in edges
    assert ("rules:v7", "evidence:r1@10%", "routed the evidence") in edges
    assert ("evidence:r1@10%", "rules:v8", "advance") in edges and ("evidence:r1@50%", "rules:v9", "advance") in edges
    assert not any(e[1] == "evidence:r1@100%" for e in edges)  # the promotion is a version, not evidence
    lineage.rollouts = [rollout]
    assert "rollout r1: title-ranking@v2 on title-ranking, promoted" in lineage.render()
    assert lineage.to_dict()["rollouts"][0]["final_rules_version"] == 9
