"""The shipped models beat their baselines, and retraining reproduces them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from workflows.facts import InMemoryFactStore
from workflows.packaging import load_manifest
from workflows.registry import default_facts_dir, default_models_dir

SHIPPED = ("churn-risk@v1", "churn-risk@v2", "fraud-score@v1", "fraud-score@v2", "title-ranking@v1",
           "title-ranking@v2")


@pytest.mark.parametrize("model_id", SHIPPED)
def test_shipped_metrics_beat_the_baseline(model_id: str) -> None:
    manifest = load_manifest(default_models_dir() / model_id)
    assert manifest.metrics.keys() == manifest.baseline_metrics.keys()
    for name, value in manifest.metrics.items():
        assert value > manifest.baseline_metrics[name] + 0.05, name


@pytest.mark.parametrize("objective", ["title-ranking", "fraud-score", "churn-risk"])
def test_v2_differs_measurably_from_v1(objective: str) -> None:
    v1 = load_manifest(default_models_dir() / f"{objective}@v1").metrics
    v2 = load_manifest(default_models_dir() / f"{objective}@v2").metrics
    assert all(abs(v1[m] - v2[m]) > 1e-3 for m in v1)


@pytest.mark.parametrize(("script", "objective"), [
    ("workflows.training.title_ranking", "title-ranking"),
    ("workflows.training.fraud_score", "fraud-score"),
    ("workflows.training.churn_risk", "churn-risk"),
])
def test_retraining_with_the_seed_reproduces_the_shipped_packages(tmp_path: Path, script: str, objective: str) -> None:
    shipped = {v: load_manifest(default_models_dir() / f"{objective}@{v}") for v in ("v1", "v2")}
    seed = shipped["v1"].training["seed"]
    subprocess.run(
        [sys.executable, "-m", script, "--out", str(tmp_path), "--seed", str(seed)],
        check=True, capture_output=True, timeout=120,
    )
    for version, manifest in shipped.items():
        retrained = load_manifest(tmp_path / "models" / f"{objective}@{version}")
        assert retrained.training["data_sizes"] == manifest.training["data_sizes"]
        for name, value in manifest.metrics.items():
            assert retrained.metrics[name] == pytest.approx(value, abs=1e-4), name
        assert retrained.baseline_metrics == pytest.approx(dict(manifest.baseline_metrics), abs=1e-6)
    fresh, ours = InMemoryFactStore.from_dir(tmp_path / "facts"), InMemoryFactStore.from_dir(default_facts_dir())
    for fact in fresh.facts():
        keys = list(ours.keys(fact))
        assert list(fresh.keys(fact)) == keys
        np.testing.assert_array_equal(fresh.lookup(fact, keys).values, ours.lookup(fact, keys).values)


def test_training_records_its_provenance() -> None:
    for model_id in SHIPPED:
        training = load_manifest(default_models_dir() / model_id).training
        assert training["script"].startswith("workflows.training.")
        assert "Logistic" in training["generative_process"] or "Bernoulli" in training["generative_process"]
        json.dumps(training)
