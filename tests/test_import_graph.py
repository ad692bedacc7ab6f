"""The shape of the code: no import cycle between modules, and streams' sub-packages import one way.

Read from the source with ``ast`` (nothing is imported). An import inside ``if TYPE_CHECKING:``
is a type-only edge: it counts for the layering of sub-packages but not as a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("schemas", "routing", "workflows", "streams", "scoreline")

# What each sub-package of streams may import from streams (besides itself). The top-level
# modules (errors, topics) are below all of them; nothing imports the bench or the client
# library's sibling packages sideways.
STREAMS_LAYERS = {
    "streams.transport": set(),
    "streams.ops": {"streams.transport"},
    "streams.rules": {"streams.transport"},
    "streams.facts": {"streams.transport"},
    "streams.broker": set(),
    "streams.scoring": set(),
    "streams.client": {"streams.transport"},
    "streams.repository": {"streams.transport"},
    "streams.rollouts": {"streams.transport", "streams.rules"},
    "streams.services": {"streams.transport", "streams.ops", "streams.rules", "streams.facts", "streams.repository",
                         "streams.rollouts", "streams.scoring"},
    # The model-bound bench sizes its model ceiling by the scoring threads a worker would get; the path users
    # run is measured through the client they call it with.
    "streams.bench": {"streams.transport", "streams.services", "streams.broker", "streams.scoring", "streams.client"},
}
STREAMS_TOP = {"streams.errors", "streams.topics", "streams.quantiles"}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> Iterator[tuple[str, bool]]:
    """(module imported, type-only?) for every import of a project module in ``path``."""
    tree = ast.parse(path.read_text())
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name:
                yield name, id(node) in type_only


def _graph(with_type_only: bool) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for target, type_only in _imports(path):
            # A package's __init__ importing its own modules is how it exports them, not a dependency.
            if target != module and not module.startswith(target + ".") and (with_type_only or not type_only):
                if MODULES[target].name == "__init__.py" and not target.startswith(module + "."):
                    # Importing a package means importing its __init__, which imports its modules.
                    graph[module].add(target)
                elif MODULES[target].name != "__init__.py":
                    graph[module].add(target)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_sees_the_modules_and_their_imports():
    graph = _graph(with_type_only=False)
    assert "streams.services.batch" in graph and "streams.transport.outbox" in graph["streams.services.batch"]


def test_no_import_cycle_between_modules():
    assert _cycle(_graph(with_type_only=False)) is None


def test_no_import_cycle_in_streams_even_counting_type_only_imports():
    """Operations code reads Protocols, not the services it watches: no cycle even for the type checker."""
    graph = {m: {t for t in targets if t.startswith("streams")}
             for m, targets in _graph(with_type_only=True).items() if m.startswith("streams")}
    assert _cycle(graph) is None


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


def _room(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def test_streams_sub_packages_import_one_way():
    wrong = []
    for module, targets in _graph(with_type_only=True).items():
        if not module.startswith("streams."):
            continue
        room = _room(module)
        for target in targets:
            if not target.startswith("streams.") or _room(target) == room or target in STREAMS_TOP:
                continue
            if room in STREAMS_TOP or _room(target) not in STREAMS_LAYERS.get(room, set()):
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_the_scoring_room_imports_no_kafka_client():
    """Compute (the scoring threads) is tested without a broker and keeps services/ about moving records."""
    import re
    files = sorted((ROOT / "streams" / "scoring").glob("*.py"))
    kafka = [f.name for f in files
             if re.search(r"^\s*(import|from)\s+(aiokafka|faust|mode|streams\.transport)\b", f.read_text(), re.M)]
    assert files and kafka == []


def test_streams_keeps_at_most_four_top_level_modules_and_twelve_per_room():
    top = sorted(p.name for p in (ROOT / "streams").glob("*.py"))
    assert len(top) <= 4, top
    rooms = [p for p in (ROOT / "streams").iterdir() if (p / "__init__.py").exists()]
    assert {f"streams.{p.name}" for p in rooms} == set(STREAMS_LAYERS)
    for room in rooms:
        modules = [p for p in room.glob("*.py") if p.name != "__init__.py"]
        assert len(modules) <= 12, (room.name, len(modules))
        first_line = ast.get_docstring(ast.parse((room / "__init__.py").read_text())) or ""
        assert first_line.strip(), f"streams/{room.name}/__init__.py says nothing of its purpose"


def test_every_package_init_exports_names_that_exist():
    import importlib

    for name, path in MODULES.items():
        if path.name != "__init__.py" or not name.startswith("streams"):
            continue
        package = importlib.import_module(name)
        exported = getattr(package, "__all__", None)
        assert exported is not None, f"{name} has no __all__"
        missing = [n for n in exported if not hasattr(package, n)]
        assert missing == [], (name, missing)


def test_bench_only_and_training_only_packages_stay_where_they_belong():
    """What a worker imports never needs an extra: Quix Streams and MLServer are the bench's, scikit-learn
    training's, pyarrow the data tools' (backfill tables and results, the shadow export), duckdb the analysts'
    (only the tests run it)."""
    extras = {"quixstreams": ("streams.bench.quix_app",), "mlserver": ("streams.bench.mlserver_runtime",),
              "pyarrow": ("streams.client.backfill_tables", "streams.client.backfill_results",
                          "streams.client.shadow_export"), "duckdb": (),
              "sklearn": ("workflows.training.",),
              "skl2onnx": ("workflows.training.",), "onnx": ("workflows.training.",)}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        for name in _absolute_imports(tree):
            allowed = extras.get(name.split(".")[0])
            assert allowed is None or module.startswith(allowed), f"{module} imports {name}"


def _absolute_imports(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
        yield from names


KAFKA_CLIENT_ROOMS = ("streams.transport", "streams.broker", "streams.bench")
"""Where aiokafka may be imported: the seam itself, the local broker's checks, and the bench's raw-client ceiling."""
FAUST_MODULES = ("streams.services.comparator", "streams.services.faust_recovery")
"""faust (and its ``mode``) beyond those rooms: only where the comparator's tables need it."""


def _kafka_client_imports() -> list[str]:
    wrong = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        in_room = module.startswith(tuple(f"{r}." for r in KAFKA_CLIENT_ROOMS))
        for name in _absolute_imports(tree):
            top = name.split(".")[0]
            if top == "aiokafka" and not in_room:
                wrong.append(f"{module} imports {name}")
            if top in ("faust", "mode") and not (in_room or module in FAUST_MODULES):
                wrong.append(f"{module} imports {name}")
        for name in _imported_names(tree):
            if name in RAW_CLIENTS and not in_room:
                wrong.append(f"{module} imports {name}")  # aiokafka's own clients, by another name
    return wrong


RAW_CLIENTS = ("aiokafka_consumer", "aiokafka_producer")
"""The transport's builders of aiokafka's own clients (``streams.transport.kafka``)."""


def _imported_names(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            yield from (a.name for a in node.names)


def test_only_the_transport_the_broker_and_the_bench_import_the_kafka_client():
    """Everything else reaches Kafka through streams.transport (its Transport, Reader, Follower and the
    types and errors it names), so a fix to how scoreline talks to Kafka is made in one place, and the
    in-memory transport can stand in for Kafka under any of it."""
    assert _kafka_client_imports() == []
    # The rule sees imports where they are: the seam's own.
    seam = {name for name in _absolute_imports(ast.parse(MODULES["streams.transport.kafka"].read_text()))}
    assert any(name.startswith("aiokafka") for name in seam)
