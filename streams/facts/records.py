"""The fact topics' record format: the spec key, the row headers, and the wire dtypes.

Record formats (the key of every record is UTF-8):

row
    key = the fact key; value = the row as raw little-endian floats, headers
    ``scoreline-fact-kind: row``, ``scoreline-fact-dtype: float32|float64``,
    ``scoreline-fact-width: <columns>``. float32 when every value of the fact
    survives the round trip (all the shipped facts do), else float64: the
    wire never loses precision. A null value (tombstone) deletes the key.
spec
    key = ``\\x00spec`` (reserved), header ``scoreline-fact-kind: spec``,
    value = JSON ``{"fact", "columns", "default", "key", "description",
    "scope", "dtype", "width", "partitions"}``. The publisher writes it to
    *every* partition, so each partition describes itself and survives
    compaction on its own. ``scope`` is ``shard`` for a fact keyed by a shard
    key (read only on the owned partitions) and ``global`` for the others
    (``title_availability`` is keyed by title: every worker reads all of it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from workflows.facts import FactSpec

__all__ = ["DTYPE_HEADER", "KIND_HEADER", "SHARD_KEY_FIELDS", "SPEC_KEY", "WIDTH_HEADER", "WIRE_DTYPES", "spec_record",
           "wire_dtype"]

KIND_HEADER = "scoreline-fact-kind"
DTYPE_HEADER = "scoreline-fact-dtype"
WIDTH_HEADER = "scoreline-fact-width"
SPEC_KEY = b"\x00spec"
"""The key of the spec record in every partition; no fact key may equal it."""
SHARD_KEY_FIELDS = ("user_id",)
"""Fact keys that are shard keys (``context.user_id``): such facts are co-partitioned, the rest global."""
WIRE_DTYPES: dict[str, np.dtype[Any]] = {"float32": np.dtype("<f4"), "float64": np.dtype("<f8")}
"""The row dtypes a ``scoreline-fact-dtype`` header may name (little-endian on the wire)."""


def wire_dtype(values: np.ndarray) -> str:
    """float32 when lossless for every value, else float64."""
    if values.size == 0 or np.array_equal(values.astype(np.float32).astype(np.float64), values, equal_nan=True):
        return "float32"
    return "float64"


def spec_record(spec: FactSpec, scope: str, dtype: str, partitions: int) -> bytes:
    """The value of the spec record written to every partition of ``spec``'s topic."""
    return orjson.dumps({
        "fact": spec.name, "columns": list(spec.columns), "default": [float(x) for x in spec.default],
        "key": spec.key, "description": spec.description, "scope": scope, "dtype": dtype,
        "width": spec.width, "partitions": partitions,
    })
