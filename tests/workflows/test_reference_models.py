"""The reference models: built by code, of the sizes the docs give, served by the ordinary workflow path."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest

from routing import parse_rules
from schemas.errors import ErrorCode
from workflows import Item, ModelRegistry, validate_package
from workflows.facts import InMemoryFactStore
from workflows.loading import build_model
from workflows.packaging import load_manifest
from workflows.training.reference import OBJECTIVES, reference_items, reference_rules


def test_each_package_validates_and_scores_its_requests(reference_dir):
    for objective in OBJECTIVES:
        directory = reference_dir / "models" / f"{objective}@v1"
        validate_package(directory)
        model = build_model(directory, InMemoryFactStore())
        outcomes = model.score_batch(reference_items(objective, 12, seed=4))
        assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok][:2]


def test_the_models_are_of_the_documented_size(reference_dir):
    models = reference_dir / "models"
    ranker = onnxruntime.InferenceSession(str(models / "ranker-gbdt@v1" / "model.onnx"))
    graph = onnx.load(str(models / "ranker-gbdt@v1" / "model.onnx")).graph
    (ensemble,) = graph.node
    trees = {int(t) for a in ensemble.attribute if a.name == "nodes_treeids" for t in a.ints}
    assert len(trees) == 400 and ranker.get_inputs()[0].shape == [None, 50]
    mlp = onnx.load(str(models / "scorer-mlp@v1" / "model.onnx")).graph
    parameters = sum(int(np.prod(t.dims)) for t in mlp.initializer)
    assert 900_000 <= parameters <= 1_100_000
    table = load_manifest(models / "retrieval-embedding@v1").weights["item_vectors"]
    assert table.shape == (100_000, 64)


def test_the_ranker_answers_the_top_candidates_in_score_order(reference_dir):
    model = build_model(reference_dir / "models" / "ranker-gbdt@v1", InMemoryFactStore())
    item = reference_items("ranker-gbdt", 1, seed=9)[0]
    candidates = item.payload["candidates"]
    unknown = Item(item.context, {**item.payload, "candidates": [*candidates, "item-999999", "other-3"]})
    (outcome,) = model.score_batch([unknown])
    ranking = outcome.value["ranking"]
    assert len(ranking) == 20 and outcome.value["unknown_items"] == 2
    assert [r["score"] for r in ranking] == sorted((r["score"] for r in ranking), reverse=True)
    # Alone or in a batch with others: the same scores (rows never leak between requests).
    batch = model.score_batch([*reference_items("ranker-gbdt", 3, seed=10), unknown])
    assert batch[-1].value == outcome.value
    assert model.manifest.serving.cost(item.payload) == len(candidates)  # the batcher counts candidates


def test_the_embedding_model_never_answers_the_history_itself(reference_dir):
    model = build_model(reference_dir / "models" / "retrieval-embedding@v1", InMemoryFactStore())
    item = reference_items("retrieval-embedding", 1, seed=2)[0]
    (outcome,) = model.score_batch([item])
    answered = [r["item"] for r in outcome.value["items"]]
    assert len(answered) == 10 and not set(answered) & set(item.payload["history"])
    table = model.workflow.table
    query = table[[int(h[5:]) for h in item.payload["history"]]].mean(axis=0)
    scores = table @ (query / np.linalg.norm(query))
    scores[[int(h[5:]) for h in item.payload["history"]]] = -np.inf
    assert answered[0] == f"item-{int(np.argmax(scores))}"


@pytest.mark.parametrize(("objective", "payload", "field"), [
    ("ranker-gbdt", {"candidates": [], "user_features": [0.0] * 10}, "payload.candidates"),
    ("ranker-gbdt", {"candidates": ["item-1"], "user_features": [0.0] * 3}, "payload.user_features"),
    ("scorer-mlp", {"features": ["x"] * 64}, "payload.features"),
    ("retrieval-embedding", {"history": ["nobody"]}, "payload.history"),
])
def test_bad_payloads_get_invalid_payload_and_leave_the_batch_alone(reference_dir, objective, payload, field):
    model = build_model(reference_dir / "models" / f"{objective}@v1", InMemoryFactStore())
    good = reference_items(objective, 2, seed=3)
    bad, first, second = model.score_batch([Item({"user_id": "u-1"}, payload), *good])
    assert bad.error is not None and bad.error.code == ErrorCode.INVALID_PAYLOAD and bad.error.field == field
    assert first.ok and second.ok


def test_the_rules_route_every_reference_objective_to_its_package(reference_dir):
    registry = ModelRegistry(reference_dir / "models", InMemoryFactStore())
    rules = parse_rules(reference_rules())
    assert set(rules.objectives) == set(OBJECTIVES)
    for objective in OBJECTIVES:
        assert registry.get(rules.objectives[objective].default).objective == objective
