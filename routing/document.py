"""Reading a JSON document field by field, collecting every problem with its path.

:class:`DocumentReader` holds the field-type readers (objects with required and
optional fields, strings, string lists, percents, name-keyed objects,
references, lists); each records a problem naming the path it reads and
returns None (or an empty value) instead of raising, so one pass over a
document reports everything wrong with it at once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["DocumentReader", "kind_of"]


class DocumentReader:
    """Reads a document, collecting every problem instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, path: str, text: str) -> None:
        """Record that the value at ``path`` is wrong, and how."""
        self.problems.append(f"{path}: {text}" if path else text)

    def fields(
        self, value: Any, path: str, required: tuple[str, ...], optional: tuple[str, ...] = ()
    ) -> Mapping[str, Any] | None:
        """An object with exactly these fields; records unknown and missing ones (None: not an object)."""
        if not isinstance(value, Mapping):
            self.problem(path or "(document)", f"expected an object, got {kind_of(value)}")
            return None
        prefix = f"{path}." if path else ""
        for key in value:
            if key not in required and key not in optional:
                self.problem(f"{prefix}{key}", "unknown field")
        for key in required:
            if key not in value:
                self.problem(f"{prefix}{key}", "missing required field")
        return value

    def string(self, value: Any, path: str, pattern: re.Pattern[str] | None = None, what: str = "") -> str | None:
        """A non-empty string, matching ``pattern`` when given."""
        if not isinstance(value, str) or not value:
            self.problem(path, f"expected a non-empty string, got {kind_of(value)}")
            return None
        if pattern is not None and not pattern.fullmatch(value):
            self.problem(path, f"{value!r} is not a valid {what}")
            return None
        return value

    def strings(self, value: Any, path: str) -> tuple[str, ...] | None:
        """A non-empty list of distinct non-empty strings."""
        if not isinstance(value, list):
            self.problem(path, f"expected a list of strings, got {kind_of(value)}")
            return None
        if not value:
            self.problem(path, "must not be empty")
            return None
        out = []
        for i, item in enumerate(value):
            s = self.string(item, f"{path}[{i}]")
            if s is not None:
                if s in out:
                    self.problem(f"{path}[{i}]", f"duplicate entry {s!r}")
                out.append(s)
        return tuple(out) if len(out) == len(value) else None

    def percent(self, value: Any, path: str) -> float | None:
        """A number 0..100 in steps of 0.01 (the bucket resolution)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.problem(path, f"expected a number 0..100, got {kind_of(value)}")
            return None
        if not 0 <= value <= 100:
            self.problem(path, f"{value!r} is outside 0..100")
            return None
        if abs(value * 100 - round(value * 100)) > 1e-6:
            self.problem(path, f"{value!r} is finer than the 0.01 % bucket resolution")
            return None
        return value

    def names(self, value: Any, path: str, pattern: re.Pattern[str], what: str) -> Mapping[str, Any]:
        """A mapping keyed by names; records each bad name and returns the mapping (or {})."""
        if not isinstance(value, Mapping):
            self.problem(path, f"expected an object, got {kind_of(value)}")
            return {}
        for key in value:
            if not isinstance(key, str) or not pattern.fullmatch(key):
                self.problem(f"{path}.{key}", f"{key!r} is not a valid {what}")
        return value

    def reference(self, value: Any, path: str, known: set[str], what: str) -> str | None:
        """A string naming one of ``known``."""
        s = self.string(value, path)
        if s is not None and s not in known:
            self.problem(path, f"unknown {what} {s!r}")
            return None
        return s

    def list_of(self, value: Any, path: str, read: Callable[[Any, str], Any]) -> list[Any]:
        """A list read item by item with ``read``; the items it could not read are left out."""
        if not isinstance(value, list):
            self.problem(path, f"expected a list, got {kind_of(value)}")
            return []
        items = [read(item, f"{path}[{i}]") for i, item in enumerate(value)]
        return [x for x in items if x is not None]


def kind_of(value: Any) -> str:
    """Name the JSON kind of ``value`` for a problem text (``a string``, ``an object``, ``null``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return f"the string {value!r}" if value == "" else "a string"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__
