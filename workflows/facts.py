"""Fact lookup: the one I/O boundary of a workflow.

A *fact* is a table of numeric rows keyed by a business id: ``user_embedding``
keyed by ``user_id``, ``title_availability`` keyed by title id. A workflow
asks for one fact at a time, for all the keys of a batch at once, through the
small :class:`FactStore` protocol. A key the store does not hold gets the
fact's documented *default row* and is counted, so that a dashboard can see
how often a model scores on defaults.

:class:`InMemoryFactStore` is the implementation the examples, the tests and
the workers use. It loads fact files from a directory and accepts upserts
(:meth:`InMemoryFactStore.put`), so that another source, such as a Kafka fact
topic materialiser, can keep it current.

Fact files (``scoreline/examples/facts/``) come in two formats:

``<fact>.npz``
    arrays ``keys`` (str, n), ``values`` (float, n x width), ``default``
    (float, width), ``columns`` (str, width) and a 0-d str ``description``.
``<fact>.json``
    ``{"description": ..., "key": ..., "columns": [...], "default": [...],
    "rows": {"<key>": [...], ...}}``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

from workflows.errors import UnknownFact

__all__ = [
    "FactBatch",
    "FactSpec",
    "FactStore",
    "InMemoryFactStore",
    "write_fact_json",
    "write_fact_npz",
]


class FactBatch(NamedTuple):
    """The rows of one fact for a sequence of keys."""

    values: np.ndarray
    "Float rows aligned with the keys, shape ``(len(keys), width)``; defaults where not found."

    found: np.ndarray
    "Boolean mask, shape ``(len(keys),)``: ``True`` where the store held the key."


@dataclass(frozen=True, slots=True)
class FactSpec:
    """What a fact is: its columns, its default row and what it means."""

    name: str
    "The fact's name, e.g. ``user_embedding``."

    columns: tuple[str, ...]
    "One name per value column."

    default: np.ndarray
    "The row returned for a key the store does not hold (float64, ``len(columns)``)."

    key: str = ""
    "What the fact is keyed by, e.g. ``user_id`` (documentation only)."

    description: str = ""
    "One or two sentences: what the rows mean and why the default is what it is."

    @property
    def width(self) -> int:
        """The number of value columns."""
        return len(self.columns)


@runtime_checkable
class FactStore(Protocol):
    """Where workflows look facts up: one call per fact per batch."""

    def lookup(self, fact: str, keys: Sequence[str]) -> FactBatch:
        """Return the rows of ``fact`` for ``keys``; unknown keys get the default row.

        Raises:
            UnknownFact: the store holds no fact of that name.
        """
        ...

    def missing_counts(self) -> dict[str, int]:
        """Return, per fact, how many looked-up keys were not found so far."""
        ...


class _Table:
    """One fact's rows: a key index and a growable float64 matrix."""

    __slots__ = ("spec", "index", "rows", "size")

    def __init__(self, spec: FactSpec) -> None:
        self.spec = spec
        self.index: dict[str, int] = {}
        self.rows = np.empty((0, spec.width), dtype=np.float64)
        self.size = 0

    def upsert(self, keys: Sequence[str], values: np.ndarray) -> None:
        new = [k for k in dict.fromkeys(keys) if k not in self.index]
        need = self.size + len(new)
        if need > self.rows.shape[0]:
            grown = np.empty((max(need, 2 * self.rows.shape[0], 16), self.spec.width))
            grown[: self.size] = self.rows[: self.size]
            self.rows = grown
        for k in new:
            self.index[k] = self.size
            self.size += 1
        # Later duplicates of a key win, as they would on a compacted topic.
        self.rows[[self.index[k] for k in keys]] = values

    def remove(self, keys: Iterable[str]) -> int:
        gone = [i for i in (self.index.pop(k, None) for k in keys) if i is not None]
        # Removed rows leave holes; close them once they are most of the matrix, so that a
        # worker whose partitions move back and forth does not grow without bound.
        if gone and len(self.index) < self.size // 2:
            order = np.fromiter(self.index.values(), dtype=np.int64, count=len(self.index))
            self.rows = self.rows[order].copy() if len(order) else np.empty((0, self.spec.width))
            self.index = {k: i for i, k in enumerate(self.index)}
            self.size = len(self.index)
        return len(gone)


class InMemoryFactStore:
    """A :class:`FactStore` holding every fact in memory (thread-safe)."""

    def __init__(self) -> None:
        self._tables: dict[str, _Table] = {}
        self._missing: dict[str, int] = {}
        self._lock = threading.Lock()
        self.source: Path | None = None
        """The directory :meth:`from_dir` read, while nothing else changed the store (a scoring process
        loads its own copy from there)."""

    # -- building -----------------------------------------------------------

    def define(
        self,
        fact: str,
        columns: Sequence[str],
        default: Sequence[float] | np.ndarray,
        *,
        key: str = "",
        description: str = "",
    ) -> FactSpec:
        """Declare a fact (its columns and default row); existing rows are dropped."""
        default_row = np.asarray(default, dtype=np.float64).reshape(-1)
        if default_row.shape[0] != len(columns):
            raise ValueError(
                f"fact {fact!r}: default has {default_row.shape[0]} values for {len(columns)} columns"
            )
        spec = FactSpec(fact, tuple(columns), default_row, key=key, description=description)
        with self._lock:
            self._tables[fact] = _Table(spec)
            self._missing.setdefault(fact, 0)
            self.source = None
        return spec

    def put(self, fact: str, keys: Sequence[str], values: np.ndarray | Sequence[Sequence[float]]) -> None:
        """Insert or replace the rows of ``keys`` (``values``: ``len(keys) x width``)."""
        keys = list(keys)
        rows = np.asarray(values, dtype=np.float64)
        if rows.ndim == 1 and len(keys) == 1:
            rows = rows.reshape(1, -1)
        with self._lock:
            table = self._table(fact)
            if rows.shape != (len(keys), table.spec.width):
                raise ValueError(
                    f"fact {fact!r}: expected values of shape {(len(keys), table.spec.width)}, got {rows.shape}"
                )
            table.upsert(keys, rows)
            self.source = None

    def delete(self, fact: str, keys: Iterable[str]) -> int:
        """Forget the rows of ``keys`` (later lookups get the default); return how many were held.

        A tombstone on a fact topic, or a fact partition a worker no longer owns, ends here.
        """
        with self._lock:
            self.source = None
            return self._table(fact).remove(keys)

    # -- FactStore ----------------------------------------------------------

    def lookup(self, fact: str, keys: Sequence[str]) -> FactBatch:
        """Return the rows of ``fact`` for ``keys``; unknown keys get the default row."""
        with self._lock:
            table = self._table(fact)
            get = table.index.get
            # map over the bound dict.get: the loop runs in C, with no generator frame per key.
            idx = np.fromiter(map(get, keys, repeat(-1)), dtype=np.int64, count=len(keys))
            found = idx >= 0
            values = table.rows[np.where(found, idx, 0)] if table.size else np.empty((len(keys), table.spec.width))
            values[~found] = table.spec.default
            self._missing[fact] += int(len(keys) - found.sum())
        return FactBatch(values, found)

    def missing_counts(self) -> dict[str, int]:
        """Return, per fact, how many looked-up keys were not found so far."""
        with self._lock:
            return dict(self._missing)

    # -- introspection ------------------------------------------------------

    def facts(self) -> tuple[str, ...]:
        """The names of the facts this store holds."""
        with self._lock:
            return tuple(sorted(self._tables))

    def spec(self, fact: str) -> FactSpec:
        """The :class:`FactSpec` of ``fact``."""
        with self._lock:
            return self._table(fact).spec

    def keys(self, fact: str) -> tuple[str, ...]:
        """Every key ``fact`` holds, in insertion order."""
        with self._lock:
            return tuple(self._table(fact).index)

    def _table(self, fact: str) -> _Table:
        try:
            return self._tables[fact]
        except KeyError:
            raise UnknownFact(f"no fact named {fact!r} (have: {', '.join(sorted(self._tables)) or 'none'})") from None

    # -- files --------------------------------------------------------------

    @classmethod
    def from_dir(cls, path: str | Path) -> InMemoryFactStore:
        """Load every ``*.npz`` and ``*.json`` fact file in ``path``."""
        store = cls()
        directory = Path(path)
        if not directory.is_dir():
            raise FileNotFoundError(f"facts directory {directory} does not exist")
        for file in sorted(directory.iterdir()):
            if file.suffix == ".npz":
                store._load_npz(file)
            elif file.suffix == ".json":
                store._load_json(file)
        store.source = directory
        return store

    def _load_npz(self, file: Path) -> None:
        with np.load(file, allow_pickle=False) as data:
            self.define(
                file.stem,
                [str(c) for c in data["columns"]],
                data["default"],
                key=str(data["key"]) if "key" in data else "",
                description=str(data["description"]) if "description" in data else "",
            )
            self.put(file.stem, [str(k) for k in data["keys"]], data["values"])

    def _load_json(self, file: Path) -> None:
        doc = json.loads(file.read_text(encoding="utf-8"))
        self.define(
            file.stem,
            doc["columns"],
            doc["default"],
            key=doc.get("key", ""),
            description=doc.get("description", ""),
        )
        rows = doc["rows"]
        if rows:
            self.put(file.stem, list(rows), np.asarray(list(rows.values()), dtype=np.float64))


def write_fact_npz(
    path: str | Path,
    spec: FactSpec,
    keys: Iterable[str],
    values: np.ndarray,
    *,
    dtype: type = np.float32,
) -> Path:
    """Write one fact as ``<path>/<spec.name>.npz`` (compressed) and return the file."""
    file = Path(path) / f"{spec.name}.npz"
    np.savez_compressed(
        file,
        keys=np.asarray(list(keys), dtype=str),
        values=np.asarray(values, dtype=dtype),
        default=np.asarray(spec.default, dtype=np.float64),
        columns=np.asarray(spec.columns, dtype=str),
        key=np.asarray(spec.key),
        description=np.asarray(spec.description),
    )
    return file


def write_fact_json(path: str | Path, spec: FactSpec, keys: Iterable[str], values: np.ndarray) -> Path:
    """Write one fact as ``<path>/<spec.name>.json`` and return the file."""
    file = Path(path) / f"{spec.name}.json"
    doc = {
        "description": spec.description,
        "key": spec.key,
        "columns": list(spec.columns),
        "default": [float(x) for x in spec.default],
        "rows": {k: [float(x) for x in row] for k, row in zip(keys, np.asarray(values), strict=True)},
    }
    file.write_text(json.dumps(doc, separators=(",", ":")) + "\n", encoding="utf-8")
    return file
