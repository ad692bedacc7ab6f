"""Fixtures for the workflows tests: the shipped example models and facts, pure and fast."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from workflows.facts import InMemoryFactStore
from workflows.registry import ModelRegistry, default_facts_dir, default_models_dir


@pytest.fixture
def facts() -> InMemoryFactStore:
    """A fresh store of the shipped facts (fresh missing counts)."""
    return InMemoryFactStore.from_dir(default_facts_dir())


@pytest.fixture
def registry(facts: InMemoryFactStore) -> ModelRegistry:
    """A registry over the shipped example models."""
    return ModelRegistry(default_models_dir(), facts)


@pytest.fixture
def models_copy(tmp_path: Path) -> Path:
    """A scratch copy of the shipped models directory, safe to break."""
    target = tmp_path / "models"
    shutil.copytree(default_models_dir(), target)
    return target
