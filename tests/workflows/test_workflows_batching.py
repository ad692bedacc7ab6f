"""Batch scoring equals one-at-a-time scoring, in one vectorised pass."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from workflows_testutil import assert_same

from workflows.base import Item, Outcome
from workflows.facts import FactBatch, InMemoryFactStore
from workflows.registry import ModelRegistry, default_models_dir
from workflows.samples import sample_items


class CountingFacts:
    """A FactStore wrapper that records every lookup."""

    def __init__(self, inner: InMemoryFactStore) -> None:
        self.inner = inner
        self.calls: list[tuple[str, int]] = []

    def lookup(self, fact: str, keys: Sequence[str]) -> FactBatch:
        self.calls.append((fact, len(keys)))
        return self.inner.lookup(fact, keys)

    def missing_counts(self) -> dict[str, int]:
        return self.inner.missing_counts()

MODELS = {
    "title-ranking@v1": "title-ranking",
    "title-ranking@v2": "title-ranking",
    "fraud-score@v1": "fraud-score",
    "fraud-score@v2": "fraud-score",
}


def with_invalid(objective: str, items: list[Item]) -> list[Item]:
    """Mix a few invalid items into a batch."""
    ctx = items[0].context
    if objective == "title-ranking":
        bad = Item(ctx, {"titles": "t-1"})
    else:
        bad = Item(ctx, {**items[0].payload, "amount": "12"})
    return [*items[:5], bad, *items[5:], Item({}, items[0].payload)]


@pytest.mark.parametrize("model_id", sorted(MODELS))
def test_batch_equals_one_at_a_time(registry: ModelRegistry, model_id: str) -> None:
    model = registry.get(model_id)
    items = with_invalid(MODELS[model_id], sample_items(MODELS[model_id], 60, seed=11))
    batch = model.score_batch(items)
    single = [model.score_batch([item])[0] for item in items]
    assert len(batch) == len(items)
    for b, s in zip(batch, single):
        assert isinstance(b, Outcome)
        assert (b.value is None) != (b.error is None)
        assert_same(b.error, s.error)
        assert_same(b.value, s.value)
    assert sum(o.error is not None for o in batch) == 2


@pytest.mark.parametrize("model_id", sorted(MODELS))
def test_one_lookup_per_fact_and_one_predict_per_batch(facts, model_id: str, monkeypatch) -> None:
    counting = CountingFacts(facts)
    model = ModelRegistry(default_models_dir(), counting).get(model_id)
    counting.calls.clear()
    predicts = []
    original = model.workflow.predict
    monkeypatch.setattr(model.workflow, "predict", lambda f: predicts.append(1) or original(f))
    outcomes = model.score_batch(sample_items(MODELS[model_id], 100, seed=2))
    assert all(o.ok for o in outcomes)
    assert sorted(f for f, _ in counting.calls) == sorted(model.manifest.facts)
    assert len(predicts) == 1


def test_empty_batch(registry: ModelRegistry) -> None:
    assert registry.get("title-ranking@v1").score_batch([]) == []


def test_batch_of_only_invalid_items(registry: ModelRegistry) -> None:
    for model_id in MODELS:
        outcomes = registry.get(model_id).score_batch([Item({}, {}), Item({"user_id": "u-1"}, {})])
        assert [o.error.code for o in outcomes] == ["invalid_payload", "invalid_payload"]


def test_a_failing_workflow_gives_workflow_errors_not_an_exception(registry, monkeypatch) -> None:
    model = registry.get("fraud-score@v1")

    def boom(features):
        raise RuntimeError("kaput")

    monkeypatch.setattr(model.workflow, "predict", boom)
    outcomes = model.score_batch(sample_items("fraud-score", 3))
    assert [o.error.code for o in outcomes] == ["workflow_error"] * 3
    assert "kaput" in outcomes[0].error.message
