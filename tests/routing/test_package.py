"""The package surface: __all__ is complete and routing stays pure."""

from __future__ import annotations

import ast
from pathlib import Path

import routing

PACKAGE = Path(routing.__file__).resolve().parent
ALLOWED_STDLIB = {
    "__future__", "bisect", "collections", "dataclasses", "enum", "hashlib", "json", "math", "os", "re", "types",
    "typing",
}


def test_all_names_exist_and_are_documented() -> None:
    for name in routing.__all__:
        obj = getattr(routing, name)
        assert name == "BUCKETS" or obj.__doc__, name
    assert sorted(routing.__all__) == routing.__all__


def test_routing_imports_only_stdlib_schemas_and_numpy() -> None:
    """numpy for hashing many keys at once (``murmur2_many``): arithmetic, no I/O."""
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = [(node.module or "").split(".")[0]]
            else:
                continue
            for root in roots:
                assert root in ALLOWED_STDLIB | {"schemas", "routing", "numpy"}, f"{path.name} imports {root}"
