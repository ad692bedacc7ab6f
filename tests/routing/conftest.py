"""Fixtures for the pure routing tests: the shipped example rules and a copyable document."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from routing import Rules, load_rules

ROOT = Path(__file__).resolve().parents[2]

EXAMPLES = ROOT / "scoreline" / "examples"


@pytest.fixture(scope="session")
def example_rules() -> Rules:
    """The shipped example rules (scoreline/examples/rules.json)."""
    return load_rules(EXAMPLES / "rules.json")


@pytest.fixture
def example_doc() -> dict[str, Any]:
    """A fresh, mutable copy of the shipped example document."""
    return copy.deepcopy(json.loads((EXAMPLES / "rules.json").read_text()))
