"""What a model holds in memory: declared by its package, measured once loaded, and given back when evicted."""

from __future__ import annotations

import ctypes
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from workflows.base import Model
from workflows.packaging import Manifest

__all__ = ["declared_bytes", "model_bytes", "onnx_bytes", "return_freed_memory"]


def _libc_malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: its allocator does not need the nudge
        return None
    return trim


_MALLOC_TRIM = _libc_malloc_trim()
_TRIM_INTERVAL_S = 1.0
_trimmed_at = 0.0


def return_freed_memory() -> None:
    """Hand the memory of evicted models back to the operating system, at most once a second (glibc).

    glibc raises its mmap threshold after the first large free, so later arrays of a few MB come
    from the heap, and models churning through a small budget fragment it: the process's RSS grew
    past the budget by a hundred MB in ``scripts/model_scale.py`` although the registry held no more
    than its budget. ``malloc_trim`` releases the free pages (about a millisecond).
    """
    global _trimmed_at
    now = time.monotonic()
    if _MALLOC_TRIM is None or now - _trimmed_at < _TRIM_INTERVAL_S:
        return
    _trimmed_at = now
    _MALLOC_TRIM(0)


def declared_bytes(weights: Mapping[str, Mapping[str, Any]], onnx_bytes: int = 0) -> int:
    """What a package says it will hold, before it loads: its manifest's ``weights`` (``{"shape", "dtype"}``
    each, as ``manifest.json`` has them) at their item size, plus its ONNX model file's bytes."""
    arrays = sum(math.prod(int(n) for n in spec["shape"]) * int(np.dtype(spec["dtype"]).itemsize)
                 for spec in weights.values())
    return arrays + onnx_bytes


def onnx_bytes(directory: Path, manifest: Manifest) -> int:
    """The size of the package's ONNX model file (0 if it declares none, or the file is missing)."""
    if manifest.onnx is None:
        return 0
    file = Path(directory) / manifest.onnx.file
    return file.stat().st_size if file.is_file() else 0


def model_bytes(model: Model) -> int:
    """What a loaded model holds in memory, as measured when it loads: its arrays, and its ONNX session's
    memory (what the process grew by while the session was built, at least the model file's size)."""
    workflow = getattr(model, "workflow", None)
    arrays = sum(int(getattr(a, "nbytes", 0)) for a in getattr(workflow, "weights", {}).values())
    package = getattr(workflow, "package", None)
    onnx = getattr(package, "onnx", None)
    return arrays + (int(getattr(onnx, "memory_bytes", 0)) if onnx is not None else 0)
