"""The registry: lazy loading, cached failures, descriptions, default locations."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import workflows.registry as registry_module
from workflows.base import Model
from workflows.errors import ModelUnavailable
from workflows.registry import ModelRegistry, default_facts_dir, default_models_dir

SHIPPED = ("churn-risk@v1", "churn-risk@v2", "fraud-score@v1", "fraud-score@v2", "title-ranking@v1",
           "title-ranking@v2")


@pytest.fixture
def loads(monkeypatch) -> list[str]:
    """Record every package load."""
    calls: list[str] = []
    real = registry_module.build_model

    def spy(directory, facts):
        calls.append(Path(directory).name)
        return real(directory, facts)

    monkeypatch.setattr(registry_module, "build_model", spy)
    return calls


def test_ids_describe_and_list_do_not_load_weights(registry: ModelRegistry, loads: list[str]) -> None:
    assert registry.ids() == SHIPPED
    listed = registry.list_models()
    assert [f"{m['name']}@{m['version']}" for m in listed] == list(SHIPPED)
    for entry in listed:
        assert set(entry) == {"name", "version", "objective", "workflow", "facts", "metrics", "baseline_metrics"}
    assert registry.describe("title-ranking@v2")["objective"] == "title-ranking"
    assert registry.objectives() == {"churn-risk": SHIPPED[:2], "fraud-score": SHIPPED[2:4],
                                     "title-ranking": SHIPPED[4:]}
    assert loads == [] and registry.loaded() == ()


def test_get_loads_once_and_caches(registry: ModelRegistry, loads: list[str]) -> None:
    model = registry.get("title-ranking@v1")
    assert isinstance(model, Model)
    assert model.id == "title-ranking@v1" and model.objective == "title-ranking"
    assert registry.get("title-ranking@v1") is model
    assert loads == ["title-ranking@v1"]
    assert registry.loaded() == ("title-ranking@v1",)


def test_broken_package_fails_every_time_from_cache(models_copy: Path, facts, loads) -> None:
    (models_copy / "fraud-score@v2" / "weights.npz").unlink()
    registry = ModelRegistry(models_copy, facts)
    for _ in range(3):
        with pytest.raises(ModelUnavailable, match="weights.npz is missing") as err:
            registry.get("fraud-score@v2")
        assert err.value.code == "model_unavailable"
    assert loads == ["fraud-score@v2"]
    assert registry.get("fraud-score@v1").id == "fraud-score@v1"  # the others still serve
    assert "fraud-score@v2" in registry.problems()


def test_broken_manifest_is_listed_as_an_id_but_not_described(models_copy: Path, facts) -> None:
    (models_copy / "title-ranking@v1" / "manifest.json").unlink()
    registry = ModelRegistry(models_copy, facts)
    assert "title-ranking@v1" in registry.ids()
    with pytest.raises(ModelUnavailable, match="manifest.json is missing"):
        registry.describe("title-ranking@v1")
    assert len(registry.list_models()) == len(SHIPPED) - 1


def test_unknown_model(registry: ModelRegistry) -> None:
    with pytest.raises(ModelUnavailable, match="no model 'ranker@v9'") as err:
        registry.get("ranker@v9")
    assert err.value.code == "model_unavailable"


def test_missing_fact_makes_the_model_unavailable(models_copy: Path) -> None:
    from workflows.facts import InMemoryFactStore

    registry = ModelRegistry(models_copy, InMemoryFactStore())
    with pytest.raises(ModelUnavailable, match="fact 'user_embedding' is not available"):
        registry.get("title-ranking@v1")


def test_default_dirs_and_env_override(monkeypatch, tmp_path: Path) -> None:
    assert (default_models_dir() / "title-ranking@v1" / "manifest.json").is_file()
    assert (default_facts_dir() / "user_embedding.npz").is_file()
    shutil.copytree(default_models_dir() / "fraud-score@v1", tmp_path / "m" / "fraud-score@v1")
    monkeypatch.setenv("SCORELINE_MODELS_DIR", str(tmp_path / "m"))
    monkeypatch.setenv("SCORELINE_FACTS_DIR", str(default_facts_dir()))
    registry = ModelRegistry.default()
    assert registry.ids() == ("fraud-score@v1",)
    assert registry.get("fraud-score@v1").score_batch([])  == []
