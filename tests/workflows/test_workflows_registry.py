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


# ---------------------------------------------------------------- memory budget, eviction, retries


def _sizes(facts) -> dict[str, int]:
    full = ModelRegistry(default_models_dir(), facts)
    return {m: registry_module.model_bytes(full.get(m)) for m in ("title-ranking@v1", "fraud-score@v1",
                                                                    "churn-risk@v2")}


def test_the_budget_keeps_the_most_recently_used_models_and_evicts_the_least(facts) -> None:
    sizes = _sizes(facts)
    assert all(size > 0 for size in sizes.values())
    budget = sizes["title-ranking@v1"] + sizes["churn-risk@v2"]
    registry = ModelRegistry(default_models_dir(), facts, memory_budget=budget)
    registry.get("title-ranking@v1")
    registry.get("churn-risk@v2")
    registry.get("title-ranking@v1")  # now the most recently used
    registry.get("fraud-score@v1")  # over the budget: the least recently used goes
    assert set(registry.loaded()) == {"title-ranking@v1", "fraud-score@v1"}
    assert registry.counts["evictions"] == 1 and registry.bytes_held() <= budget
    assert registry.get("churn-risk@v2").id == "churn-risk@v2"  # an evicted model loads again on demand
    assert registry.counts["loads"] == 4


def test_a_model_larger_than_the_whole_budget_is_refused_not_loaded_and_evicted_in_a_loop(facts, loads) -> None:
    sizes = _sizes(facts)
    del loads[:]  # measuring the sizes loaded them once
    registry = ModelRegistry(default_models_dir(), facts, memory_budget=sizes["title-ranking@v1"] - 1)
    for _ in range(3):
        with pytest.raises(ModelUnavailable, match="more than the whole memory budget"):
            registry.get("title-ranking@v1")
    assert loads == ["title-ranking@v1"] and registry.loaded() == ()
    assert registry.get("fraud-score@v1").id == "fraud-score@v1"  # a smaller one still serves


def test_a_failed_load_is_retried_after_a_backoff_not_cached_for_ever(models_copy: Path, facts, loads,
                                                                      monkeypatch) -> None:
    weights = models_copy / "fraud-score@v2" / "weights.npz"
    kept = weights.read_bytes()
    weights.unlink()
    registry = ModelRegistry(models_copy, facts)
    clock = [1000.0]
    monkeypatch.setattr(registry_module.time, "monotonic", lambda: clock[0])
    with pytest.raises(ModelUnavailable, match="weights.npz is missing"):
        registry.get("fraud-score@v2")
    weights.write_bytes(kept)  # the fault goes away (a package repaired, facts arrived)
    with pytest.raises(ModelUnavailable):
        registry.get("fraud-score@v2")  # not retried yet: no retry storm
    clock[0] += registry_module.RETRY_FIRST_S
    assert registry.get("fraud-score@v2").id == "fraud-score@v2"
    assert loads == ["fraud-score@v2", "fraud-score@v2"] and registry.problems() == {}


def test_a_manifest_that_could_not_be_read_is_read_again_after_a_backoff(models_copy: Path, facts,
                                                                        monkeypatch) -> None:
    manifest = models_copy / "fraud-score@v2" / "manifest.json"
    kept = manifest.read_bytes()
    manifest.write_bytes(kept[: len(kept) // 2])  # caught mid-write
    registry = ModelRegistry(models_copy, facts)
    clock = [1000.0]
    monkeypatch.setattr(registry_module.time, "monotonic", lambda: clock[0])
    with pytest.raises(ModelUnavailable, match="not readable JSON"):
        registry.manifest("fraud-score@v2")
    manifest.write_bytes(kept)
    with pytest.raises(ModelUnavailable):
        registry.manifest("fraud-score@v2")  # not read again yet: no retry storm
    assert "fraud-score@v2" in registry.problems()
    clock[0] += registry_module.RETRY_FIRST_S
    assert registry.manifest("fraud-score@v2").id == "fraud-score@v2"
    assert "fraud-score@v2" not in registry.problems()


def test_concurrent_first_requests_share_one_load_and_other_models_are_served_meanwhile(monkeypatch, facts) -> None:
    import threading

    registry = ModelRegistry(default_models_dir(), facts)
    served = registry.get("fraud-score@v1")
    started, gate = threading.Event(), threading.Event()
    calls: list[str] = []
    real = registry_module.build_model

    def slow(directory, store):
        calls.append(Path(directory).name)
        started.set()
        assert gate.wait(10)
        return real(directory, store)

    monkeypatch.setattr(registry_module, "build_model", slow)
    got: list[Model] = []
    threads = [threading.Thread(target=lambda: got.append(registry.get("title-ranking@v1"))) for _ in range(3)]
    for thread in threads:
        thread.start()
    assert started.wait(10)
    assert registry.get("fraud-score@v1") is served  # not blocked by the load under way
    gate.set()
    for thread in threads:
        thread.join(10)
    assert calls == ["title-ranking@v1"] and len(got) == 3 and got[0] is got[1] is got[2]


def test_load_durations_fill_the_histogram_and_sizes_outlive_eviction(facts) -> None:
    sizes = _sizes(facts)
    registry = ModelRegistry(default_models_dir(), facts, memory_budget=sizes["title-ranking@v1"])
    registry.get("title-ranking@v1")
    registry.get("fraud-score@v1")  # evicts title-ranking@v1
    assert sum(registry.load_histogram) == 2 == registry.counts["loads"]
    assert registry.measured == {"title-ranking@v1": sizes["title-ranking@v1"],
                                 "fraud-score@v1": sizes["fraud-score@v1"]}
    assert registry.loaded() == ("fraud-score@v1",)


def test_a_rarely_used_model_is_served_but_does_not_evict_a_busier_one(facts) -> None:
    sizes = _sizes(facts)
    budget = max(sizes["title-ranking@v1"], sizes["fraud-score@v1"])  # room for one of the two, not both
    registry = ModelRegistry(default_models_dir(), facts, memory_budget=budget)
    hot = registry.get("title-ranking@v1", uses=50)
    rare = registry.get("fraud-score@v1", uses=1)  # would need title-ranking@v1's room
    assert rare.id == "fraud-score@v1"  # served, for the requests in hand
    assert registry.loaded() == ("title-ranking@v1",) and registry.get("title-ranking@v1") is hot
    assert (registry.counts["bypasses"], registry.counts["evictions"]) == (1, 0)
    for _ in range(60):  # its traffic grows past the busy one's: now it is kept, and the other goes
        registry.get("fraud-score@v1", uses=1)
    assert registry.loaded() == ("fraud-score@v1",) and registry.counts["evictions"] == 1
