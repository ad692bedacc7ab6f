"""The JSON Schema documents of the messages, shipped as package data.

They describe the wire format for producers and consumers in other
languages; scoreline itself validates with :mod:`schemas.codec`, and a test
keeps the two in agreement.
"""

from __future__ import annotations

import copy
import functools
import json
from importlib import resources
from typing import Any

__all__ = ["SCHEMA_NAMES", "json_schema"]

SCHEMA_NAMES: tuple[str, ...] = ("request", "result", "dead_letter", "shadow_result", "comparison")
"The names :func:`json_schema` accepts, one per message; the files are ``schemas/json/<name>.schema.json``."


def json_schema(name: str) -> dict[str, Any]:
    """Return the JSON Schema document (draft 2020-12) of one message.

    Args:
        name: one of :data:`SCHEMA_NAMES`, e.g. ``"request"``.

    Returns:
        A fresh copy of the document, safe to modify.

    Raises:
        ValueError: ``name`` is not one of :data:`SCHEMA_NAMES`.
    """
    if name not in SCHEMA_NAMES:
        raise ValueError(f"no JSON Schema named {name!r}; expected one of {', '.join(SCHEMA_NAMES)}")
    # Callers get a copy so that one of them editing a document (to add a
    # $ref base, say) cannot change it for the others.
    return copy.deepcopy(_load(name))


@functools.cache
def _load(name: str) -> dict[str, Any]:
    path = resources.files("schemas").joinpath("json", f"{name}.schema.json")
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document
