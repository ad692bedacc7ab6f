"""ONNX models as a workflow's trained component: one session per model load, one run per batch.

A package declares its ONNX model in the manifest::

    "onnx": {"file": "model.onnx",
             "inputs":  {"features":      {"shape": [null, 18], "dtype": "float32"}},
             "outputs": {"probabilities": {"shape": [null, 2],  "dtype": "float32"}}}

(``null`` is the batch dimension, or any other free one). On load the session is built once
(onnxruntime, CPU, one intra-op thread by default, or ``SCORELINE_ONNX_THREADS``: a worker
runs calls on several scoring threads at once, one per core, so a session that spread one
call over every core too would oversubscribe them) and checked against the declaration: a file that
does not load, or a graph whose inputs and outputs differ in name, rank, fixed size or
element type, is a :class:`~workflows.errors.ModelPackageError` (``model_unavailable``).
Each batch is one :meth:`OnnxModel.run`; inputs that do not match the declared shapes are a
:class:`~workflows.errors.WorkflowError` (``workflow_error``) naming the input, never a crash.
This covers models exported from scikit-learn (``skl2onnx``), LightGBM, XGBoost and PyTorch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from workflows.errors import ModelPackageError, WorkflowError

__all__ = ["ONNX_THREADS_ENV", "OnnxModel", "OnnxSpec", "TensorSpec", "onnx_threads", "parse_onnx_spec",
           "resident_bytes"]

ONNX_THREADS_ENV = "SCORELINE_ONNX_THREADS"
"Intra-op threads per ONNX session (default 1; ``scoreline run --onnx-threads`` sets it)."


_MEASURED: dict[tuple[str, int, int], int] = {}
"""Each model file's session memory, as first measured in this process."""

_WARM_MODEL = (b'\x08\x08::\n\x10\n\x01x\x12\x01y"\x08Identity\x12\x04warmZ\x0f\n\x01x\x12\n\n\x08\x08\x01\x12'
               b'\x04\n\x02\x08\x01b\x0f\n\x01y\x12\n\n\x08\x08\x01\x12\x04\n\x02\x08\x01B\x04\n\x00\x10\x11')
"""A one-node ONNX graph (Identity), whose session starts the runtime's environment before any measurement."""
_warmed = False


def _warm_runtime(onnxruntime: Any) -> None:
    """Build one trivial session first, so the runtime's one-time start is not counted against a model."""
    global _warmed
    if not _warmed:
        onnxruntime.InferenceSession(_WARM_MODEL, providers=["CPUExecutionProvider"])
        _warmed = True


def resident_bytes() -> int:
    """The process's resident memory now (Linux ``/proc/self/statm``; 0 where there is none)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def onnx_threads() -> int:
    """``SCORELINE_ONNX_THREADS`` if it is a positive number, else 1."""
    raw = os.environ.get(ONNX_THREADS_ENV, "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else 1

# ONNX element types (as onnxruntime names them) and the numpy dtypes that feed them.
_ONNX_TYPES = {
    "tensor(float)": "float32", "tensor(double)": "float64", "tensor(int64)": "int64", "tensor(int32)": "int32",
    "tensor(bool)": "bool", "tensor(string)": "str",
}


class TensorSpec(NamedTuple):
    """A declared input or output: its shape (None for a free dimension) and numpy dtype name."""

    shape: tuple[int | None, ...]
    "Dimensions; None where any size goes (the batch)."

    dtype: str
    "numpy dtype name: ``float32``, ``float64``, ``int64``, ``int32``, ``bool``, ``str``."


class OnnxSpec(NamedTuple):
    """The manifest's ``onnx`` field."""

    file: str
    "The model file inside the package (``model.onnx``)."

    inputs: Mapping[str, TensorSpec]
    "Graph inputs by name."

    outputs: Mapping[str, TensorSpec]
    "Graph outputs by name (the ones the workflow reads)."

    def to_dict(self) -> dict[str, Any]:
        """The JSON object a manifest holds."""
        def tensors(specs: Mapping[str, TensorSpec]) -> dict[str, Any]:
            return {n: {"shape": list(s.shape), "dtype": s.dtype} for n, s in specs.items()}

        return {"file": self.file, "inputs": tensors(self.inputs), "outputs": tensors(self.outputs)}


def _dims(shape: Any) -> tuple[int | None, ...]:
    return tuple(d if isinstance(d, int) else None for d in shape)


class OnnxModel:
    """A loaded ONNX model: ``run`` it once per batch."""

    def __init__(self, directory: Path, spec: OnnxSpec, *, threads: int | None = None) -> None:
        self.spec = spec
        path = directory / spec.file
        if not path.is_file():
            raise ModelPackageError(f"model package {directory}: {spec.file} is missing")
        try:
            import onnxruntime
        except ImportError as exc:  # a worker installed without it cannot serve ONNX packages
            raise ModelPackageError(f"model package {directory}: declares an ONNX model but onnxruntime is not "
                                    f"installed ({exc})") from exc
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or onnx_threads()
        options.inter_op_num_threads = 1
        _warm_runtime(onnxruntime)
        before = resident_bytes()
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for a file it cannot load
            raise ModelPackageError(f"model package {directory}: {spec.file} does not load: "
                                    f"{type(exc).__name__}: {exc}") from exc
        grown = resident_bytes() - before
        stat = path.stat()
        self.file_bytes = stat.st_size
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        self.memory_bytes = _MEASURED.setdefault(key, max(self.file_bytes, grown))
        """What the session holds: the process's resident memory grown while the file's first session was
        built (a tree ensemble's session holds many times its file: 21 MB for the 0.8 MB reference ranker),
        never less than the file; the same file measured again would say otherwise only by allocator noise,
        so its first figure stands, and a budget's sums stay consistent across evictions and reloads."""
        self._check(directory, "input", {i.name: i for i in self.session.get_inputs()}, spec.inputs)
        self._check(directory, "output", {o.name: o for o in self.session.get_outputs()}, spec.outputs)
        self._outputs = list(spec.outputs)

    @staticmethod
    def _check(directory: Path, kind: str, graph: Mapping[str, Any], declared: Mapping[str, TensorSpec]) -> None:
        def fail(message: str) -> ModelPackageError:
            return ModelPackageError(f"model package {directory}: onnx {kind} {message}")

        if kind == "input" and set(graph) != set(declared):
            raise fail(f"names {sorted(declared)} but the model's are {sorted(graph)}")
        for name, spec in declared.items():
            node = graph.get(name)
            if node is None:
                raise fail(f"{name!r} is declared but the model has only {sorted(graph)}")
            dtype = _ONNX_TYPES.get(node.type)
            if dtype != spec.dtype:
                raise fail(f"{name!r} is declared {spec.dtype} but the model takes {node.type}")
            dims = _dims(node.shape)
            if len(dims) != len(spec.shape) or any(a is not None and b is not None and a != b
                                                    for a, b in zip(dims, spec.shape)):
                raise fail(f"{name!r} is declared with shape {list(spec.shape)} but the model's is {list(dims)}")

    def run(self, inputs: np.ndarray | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One session run for the whole batch; ``inputs`` by name (or one array for a one-input model).

        Raises:
            WorkflowError: an input is missing, or its rank, fixed sizes or dtype do not match the declaration.
        """
        if isinstance(inputs, np.ndarray):
            if len(self.spec.inputs) != 1:
                raise WorkflowError(f"the onnx model takes {sorted(self.spec.inputs)}: pass them by name")
            inputs = {next(iter(self.spec.inputs)): inputs}
        feeds = {}
        for name, spec in self.spec.inputs.items():
            value = inputs.get(name)
            if value is None:
                raise WorkflowError(f"onnx input {name!r} is missing")
            array = np.asarray(value)
            if array.ndim != len(spec.shape) or any(d is not None and d != n for d, n in zip(spec.shape, array.shape)):
                raise WorkflowError(f"onnx input {name!r} has shape {list(array.shape)}, the model takes "
                                    f"{list(spec.shape)}")
            if spec.dtype != "str" and array.dtype != spec.dtype:
                if not np.can_cast(array.dtype, spec.dtype, casting="same_kind"):
                    raise WorkflowError(f"onnx input {name!r} is {array.dtype}, the model takes {spec.dtype}")
                array = array.astype(spec.dtype)
            feeds[name] = array
        results = self.session.run(self._outputs, feeds)
        return {name: np.asarray(value) for name, value in zip(self._outputs, results)}


def parse_onnx_spec(doc: Any, fail: Any) -> OnnxSpec | None:
    """The manifest's ``onnx`` field checked (None when absent); ``fail(message)`` makes the error to raise."""
    if doc is None:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("file"), str) or not doc["file"]:
        raise fail("manifest field 'onnx' must be {\"file\": ..., \"inputs\": {...}, \"outputs\": {...}}")
    if Path(doc["file"]).is_absolute() or ".." in Path(doc["file"]).parts:
        raise fail("manifest field onnx.file must be a path inside the package")

    def tensors(kind: str) -> dict[str, TensorSpec]:
        raw = doc.get(kind)
        if not isinstance(raw, dict) or not raw:
            raise fail(f"manifest field onnx.{kind} must name at least one tensor")
        out = {}
        for name, spec in raw.items():
            shape = spec.get("shape") if isinstance(spec, dict) else None
            dtype = spec.get("dtype") if isinstance(spec, dict) else None
            if not isinstance(shape, list) or not all(d is None or (isinstance(d, int) and d > 0) for d in shape):
                raise fail(f"manifest field onnx.{kind}.{name}.shape must be a list of sizes or null")
            if dtype not in _ONNX_TYPES.values():
                raise fail(f"manifest field onnx.{kind}.{name}.dtype must be one of "
                           f"{sorted(set(_ONNX_TYPES.values()))}")
            out[name] = TensorSpec(tuple(shape), str(dtype))
        return out

    return OnnxSpec(doc["file"], tensors("inputs"), tensors("outputs"))
