"""The public surface: __all__ is honest, imports flow one way, samples are realistic."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import workflows
from workflows.facts import InMemoryFactStore
from workflows.registry import default_facts_dir
from workflows.samples import sample_items

ALLOWED = {"numpy", "onnxruntime", "schemas", "workflows", "__future__"}
# Training is not serving: the training scripts may use what only training needs (the `train` extra).
TRAINING_ONLY = {"sklearn", "skl2onnx", "onnx"}


def test_all_names_exist() -> None:
    for name in workflows.__all__:
        assert hasattr(workflows, name), name
    assert sorted(workflows.__all__) == workflows.__all__


def test_workflows_import_only_numpy_onnxruntime_stdlib_and_schemas() -> None:
    root = Path(workflows.__file__).parent
    for file in root.rglob("*.py"):
        allowed = ALLOWED | (TRAINING_ONLY if "training" in file.relative_to(root).parts else set())
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in allowed or top in sys.stdlib_module_names, f"{file.name} imports {name}"


@pytest.mark.parametrize("objective", ["title-ranking", "fraud-score"])
def test_samples_are_deterministic_and_use_known_users(objective: str) -> None:
    a = sample_items(objective, 200, seed=5)
    assert a == sample_items(objective, 200, seed=5)
    assert a != sample_items(objective, 200, seed=6)
    facts = InMemoryFactStore.from_dir(default_facts_dir())
    found = facts.lookup("user_profile", [i.context["user_id"] for i in a]).found
    assert 0.9 < found.mean() < 1.0  # mostly known users, a few unknown ones
    assert {"user_id", "country", "device", "surface"} <= set(a[0].context)


def test_ranking_samples_have_20_titles_some_unknown() -> None:
    items = sample_items("title-ranking", 200, seed=1)
    assert all(len(i.payload["titles"]) == 20 for i in items)
    catalogue = set(InMemoryFactStore.from_dir(default_facts_dir()).keys("title_availability"))
    ids = [t for i in items for t in i.payload["titles"]]
    assert 0 < sum(t not in catalogue for t in ids) < 0.1 * len(ids)


def test_unknown_objective() -> None:
    with pytest.raises(ValueError, match="no samples"):
        sample_items("weather", 1)
