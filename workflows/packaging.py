"""The model package format: a directory holding a manifest, and what its workflow needs.

A package lives at ``<models_dir>/<name>@<version>/``::

    manifest.json   what the model is (see :class:`Manifest`)
    weights.npz     the numpy arrays the manifest's ``weights`` lists, shape for shape
                    (optional: a workflow with no trained arrays declares none and ships none)
    workflow.py     the package's own workflow, when ``workflow`` is ``workflow:Class``
    model.onnx      an ONNX model, when the manifest declares one under ``onnx``
    examples.json   example requests (``[{"context": ..., "payload": ...}]``), optional

:func:`load_manifest` and :func:`load_weights` check what this module knows (the manifest
and the arrays); :mod:`workflows.loading` finds the workflow and builds the model. All raise
:class:`~workflows.errors.ModelPackageError` (code ``model_unavailable``) with a message
naming the package and the fault.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from workflows.errors import ModelPackageError
from workflows.onnx import OnnxSpec, parse_onnx_spec

__all__ = [
    "EXAMPLES_FILE",
    "MANIFEST_FILE",
    "WEIGHTS_FILE",
    "Manifest",
    "ServingSpec",
    "load_examples",
    "load_manifest",
    "load_weights",
    "weight_specs",
    "write_package",
]

MANIFEST_FILE = "manifest.json"
WEIGHTS_FILE = "weights.npz"
EXAMPLES_FILE = "examples.json"
FORMAT = 1


@dataclass(frozen=True)
class WeightSpec:
    """The declared shape and dtype of one weight array."""

    shape: tuple[int, ...]
    "Exact array shape."

    dtype: str
    "numpy dtype name (``float64``, ``<U8``...); compared by kind (float, int, str)."


DEFAULT_TIME_LIMIT_MS = 10_000
"""How long one workflow call may run before its items get ``workflow_timeout`` (``serving.time_limit_ms``)."""


@dataclass(frozen=True)
class ServingSpec:
    """How the worker runs the model (the manifest's optional ``serving`` object)."""

    time_limit_ms: int = DEFAULT_TIME_LIMIT_MS
    "The longest one workflow call (one batch) may take; past it the batch's items get ``workflow_timeout``."

    max_batch_cost: int = 0
    """The most one call may cost (see ``batch_cost``); 0: no bound, a call takes every request waiting.
    One request that costs more than the bound is still scored, alone."""

    max_queue_delay_us: int = 0
    """How long a request may wait for a fuller batch when its model is idle, in microseconds; 0: never
    (no added latency). A request never waits past its deadline less the model's usual call time."""

    batch_cost: str = "items"
    """What a request costs: ``items`` (one each), or ``payload.<field>``: the length of that array (the
    candidates of a ranking request), 1 where it is absent or not an array."""

    max_calls_in_flight: int = 0
    """How many of its calls may run at once, on different scoring threads (their answers still go out in
    the order the calls started). 0, the default: its share of the threads, the scoring threads divided
    among the models with requests in the process, never all of them (one is always left to a model
    that has none yet), at least 1."""

    executor: str = "threads"
    """Where its calls run: ``threads`` (the default: numpy and ONNX Runtime release the GIL) or
    ``processes``, for a workflow that computes in Python and would hold the GIL."""

    def cost(self, payload: Any) -> int:
        """What one request with ``payload`` costs a call, by ``batch_cost``."""
        if self.batch_cost == "items":
            return 1
        value = payload.get(self.batch_cost[8:]) if isinstance(payload, dict) else None
        return len(value) if isinstance(value, list) and value else 1


@dataclass(frozen=True)
class Manifest:
    """What a model package says about itself (``manifest.json``)."""

    name: str
    "Model name, e.g. ``title-ranking``."

    version: str
    "Model version, e.g. ``v2``."

    objective: str
    "The objective the model serves."

    workflow: str
    "The workflow that runs it: a built-in name, ``module:Class``, or an installed plug-in's name."

    description: str
    "One paragraph for humans."

    facts: tuple[str, ...]
    "The facts the workflow looks up."

    input_schema: Mapping[str, Any]
    "JSON Schema of the payload (and the context fields it reads)."

    output_schema: Mapping[str, Any]
    "JSON Schema of the result object."

    params: Mapping[str, Any]
    "Workflow parameters that are not arrays (defaults, thresholds, vocabularies)."

    weights: Mapping[str, WeightSpec]
    "Every array of ``weights.npz``, by name."

    training: Mapping[str, Any]
    "How it was trained: seed, generative process, data sizes, date, script."

    metrics: Mapping[str, float]
    "Offline metrics on held-out data."

    baseline: str
    "What the baseline is, in one line."

    baseline_metrics: Mapping[str, float]
    "The baseline's metrics, same names, same held-out data."

    onnx: OnnxSpec | None = None
    "The package's ONNX model (file, inputs, outputs), if its workflow runs one (``workflows.onnx``)."

    serving: ServingSpec = ServingSpec()
    "How the worker runs it: the time limit of one call (defaults where the manifest says nothing)."

    @property
    def id(self) -> str:
        """``<name>@<version>``."""
        return f"{self.name}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        """The manifest as the JSON object ``manifest.json`` holds."""
        doc = asdict(self)
        doc["facts"] = list(self.facts)
        doc["weights"] = {n: {"shape": list(w.shape), "dtype": w.dtype} for n, w in self.weights.items()}
        default = ServingSpec()
        doc["serving"] = {f.name: getattr(self.serving, f.name) for f in fields(ServingSpec)
                          if getattr(self.serving, f.name) != getattr(default, f.name)}
        if not doc["serving"]:
            del doc["serving"]
        if self.onnx is None:
            del doc["onnx"]
        else:
            doc["onnx"] = self.onnx.to_dict()
        return {"format": FORMAT, **doc}

    def summary(self) -> dict[str, Any]:
        """The short description a registry lists."""
        return {
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "objective": self.objective,
            "workflow": self.workflow,
            "facts": list(self.facts),
            "metrics": dict(self.metrics),
            "baseline_metrics": dict(self.baseline_metrics),
        }


def _fail(directory: Path, message: str) -> ModelPackageError:
    return ModelPackageError(f"model package {directory}: {message}")


def _field(doc: Mapping[str, Any], name: str, kind: type, directory: Path) -> Any:
    if name not in doc:
        raise _fail(directory, f"manifest field {name!r} is missing")
    value = doc[name]
    if not isinstance(value, kind):
        raise _fail(directory, f"manifest field {name!r} must be {kind.__name__}, got {type(value).__name__}")
    return value


def _metrics(doc: Mapping[str, Any], name: str, directory: Path) -> dict[str, float]:
    raw = _field(doc, name, dict, directory)
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(directory, f"manifest field {name}.{key} must be a number")
    return {k: float(v) for k, v in raw.items()}


def load_manifest(directory: str | Path) -> Manifest:
    """Read and check ``<directory>/manifest.json`` (the weights are not opened).

    Raises:
        ModelPackageError: the manifest is missing, is not JSON, lacks a
            field, has a field of the wrong type, or names a package other
            than its directory.
    """
    directory = Path(directory)
    file = directory / MANIFEST_FILE
    if not file.is_file():
        raise _fail(directory, f"{MANIFEST_FILE} is missing")
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(directory, f"{MANIFEST_FILE} is not readable JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise _fail(directory, f"{MANIFEST_FILE} must hold a JSON object")
    if doc.get("format", FORMAT) != FORMAT:
        raise _fail(directory, f"manifest format {doc.get('format')!r} is not supported (want {FORMAT})")

    name = _field(doc, "name", str, directory)
    version = _field(doc, "version", str, directory)
    if not name or not version or "@" in name or "@" in version:
        raise _fail(directory, "manifest fields 'name' and 'version' must be non-empty and free of '@'")
    if directory.name != f"{name}@{version}":
        raise _fail(directory, f"manifest names {name}@{version} but the directory is {directory.name!r}")

    facts = _field(doc, "facts", list, directory)
    if not all(isinstance(f, str) and f for f in facts):
        raise _fail(directory, "manifest field 'facts' must be a list of fact names")

    weights: dict[str, WeightSpec] = {}
    for wname, spec in _field(doc, "weights", dict, directory).items():
        shape = spec.get("shape") if isinstance(spec, dict) else None
        dtype = spec.get("dtype") if isinstance(spec, dict) else None
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise _fail(directory, f"manifest field weights.{wname}.shape must be a list of sizes")
        if not isinstance(dtype, str):
            raise _fail(directory, f"manifest field weights.{wname}.dtype must be a numpy dtype name")
        try:
            np.dtype(dtype)
        except TypeError as exc:
            raise _fail(directory, f"manifest field weights.{wname}.dtype {dtype!r} is not a numpy dtype") from exc
        weights[wname] = WeightSpec(tuple(shape), dtype)

    training = _field(doc, "training", dict, directory)
    for key, kind in (("seed", int), ("generative_process", str), ("data_sizes", dict), ("date", str)):
        if not isinstance(training.get(key), kind):
            raise _fail(directory, f"manifest field training.{key} must be {kind.__name__}")

    metrics = _metrics(doc, "metrics", directory)
    baseline_metrics = _metrics(doc, "baseline_metrics", directory)
    if set(metrics) != set(baseline_metrics):
        raise _fail(directory, "manifest fields 'metrics' and 'baseline_metrics' must name the same metrics")

    return Manifest(
        name=name,
        version=version,
        objective=_field(doc, "objective", str, directory),
        workflow=_field(doc, "workflow", str, directory),
        description=_field(doc, "description", str, directory),
        facts=tuple(facts),
        input_schema=_field(doc, "input_schema", dict, directory),
        output_schema=_field(doc, "output_schema", dict, directory),
        params=_field(doc, "params", dict, directory),
        weights=weights,
        training=training,
        metrics=metrics,
        baseline=_field(doc, "baseline", str, directory),
        baseline_metrics=baseline_metrics,
        onnx=parse_onnx_spec(doc.get("onnx"), lambda message: _fail(directory, message)),
        serving=_serving(doc.get("serving"), directory),
    )


def _serving(doc: Any, directory: Path) -> ServingSpec:
    """The manifest's ``serving`` object checked; the defaults where it is absent."""
    if doc is None:
        return ServingSpec()
    if not isinstance(doc, dict):
        raise _fail(directory, "manifest field 'serving' must be an object")
    known = [f.name for f in fields(ServingSpec)]
    unknown = sorted(set(doc) - set(known))
    if unknown:
        raise _fail(directory, f"manifest field 'serving' has unknown fields {unknown} (known: {known})")
    limit = doc.get("time_limit_ms", DEFAULT_TIME_LIMIT_MS)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        raise _fail(directory, "manifest field serving.time_limit_ms must be a positive whole number of milliseconds")
    bounds = {}
    for name, least in (("max_batch_cost", 0), ("max_queue_delay_us", 0), ("max_calls_in_flight", 0)):
        value = doc.get(name, getattr(ServingSpec, name))
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise _fail(directory, f"manifest field serving.{name} must be a whole number, {least} or more")
        bounds[name] = value
    cost = doc.get("batch_cost", "items")
    if not isinstance(cost, str) or not (cost == "items" or (cost.startswith("payload.") and len(cost) > 8)):
        raise _fail(directory, "manifest field serving.batch_cost must be 'items' or 'payload.<array field>'")
    executor = doc.get("executor", "threads")
    if executor not in ("threads", "processes"):
        raise _fail(directory, "manifest field serving.executor must be 'threads' or 'processes'")
    return ServingSpec(time_limit_ms=limit, batch_cost=cost, executor=executor, **bounds)


def load_weights(directory: str | Path, manifest: Manifest, *, verified: bool = False) -> dict[str, np.ndarray]:
    """The package's arrays, checked against the manifest (none for a package that declares none).

    ``verified``: the file's bytes are known good (the package digest was computed over these very
    files, unchanged since), so stored arrays are read straight into place, without the archive's
    per-chunk CRC and copies (a reload of an evicted model: about three times faster).

    Raises:
        ModelPackageError: ``weights.npz`` is missing while the manifest declares arrays, is not
            a readable archive, or holds arrays whose names, shapes or dtypes disagree.
    """
    directory = Path(directory)
    file = directory / WEIGHTS_FILE
    if not file.is_file():
        if not manifest.weights:
            return {}  # a workflow with no trained component: rules, heuristics, look-ups
        raise _fail(directory, f"{WEIGHTS_FILE} is missing")
    try:
        arrays = _read_stored(file) if verified else None
        if arrays is None:
            with np.load(file, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise _fail(directory, f"{WEIGHTS_FILE} is not a readable npz archive: {exc}") from exc
    declared, present = set(manifest.weights), set(arrays)
    if declared - present:
        raise _fail(directory, f"{WEIGHTS_FILE} lacks arrays the manifest declares: {sorted(declared - present)}")
    if present - declared:
        undeclared = sorted(present - declared)
        raise _fail(directory, f"{WEIGHTS_FILE} holds arrays the manifest does not declare: {undeclared}")
    for name, spec in manifest.weights.items():
        array = arrays[name]
        if array.shape != spec.shape:
            raise _fail(
                directory,
                f"weight {name!r} has shape {list(array.shape)} but the manifest declares {list(spec.shape)}",
            )
        if array.dtype.kind != np.dtype(spec.dtype).kind:
            raise _fail(directory, f"weight {name!r} has dtype {array.dtype} but the manifest declares {spec.dtype}")
    return arrays


def _read_stored(file: Path) -> dict[str, np.ndarray] | None:
    """The arrays of an npz whose members are all stored uncompressed, each read by one ``readinto``.

    None when a member is compressed or holds objects: ``np.load`` reads those.
    """
    with zipfile.ZipFile(file) as archive:
        members = archive.infolist()
        if any(m.compress_type != zipfile.ZIP_STORED or not m.filename.endswith(".npy") for m in members):
            return None
        arrays = {}
        with open(file, "rb") as raw:
            for member in members:
                raw.seek(member.header_offset)
                header = raw.read(30)  # the local file header; its name and extra field lengths vary
                if header[:4] != b"PK\x03\x04":
                    raise zipfile.BadZipFile(f"{member.filename}: no local file header")
                raw.seek(int.from_bytes(header[26:28], "little") + int.from_bytes(header[28:30], "little"), 1)
                version = np.lib.format.read_magic(raw)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(raw)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(raw)
                else:
                    return None
                if dtype.hasobject:
                    return None
                array = np.empty(shape, dtype=dtype, order="F" if fortran else "C")
                if raw.readinto(array.reshape(-1, order="A").view(np.uint8).data) != array.nbytes:
                    raise EOFError(f"{member.filename}: the archive ends inside the array")
                arrays[member.filename[:-4]] = array
        return arrays


def load_examples(directory: str | Path) -> list[dict[str, Any]]:
    """The package's example requests (``examples.json``), each ``{"context": {...}, "payload": {...}}``.

    Raises:
        ModelPackageError: the file exists but is not a list of such objects.
    """
    directory = Path(directory)
    file = directory / EXAMPLES_FILE
    if not file.is_file():
        return []
    try:
        examples = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(directory, f"{EXAMPLES_FILE} is not readable JSON: {exc}") from exc
    if not isinstance(examples, list) or not all(
            isinstance(e, dict) and isinstance(e.get("context"), dict) and isinstance(e.get("payload", {}), dict)
            for e in examples):
        raise _fail(directory, f'{EXAMPLES_FILE} must be a list of {{"context": {{...}}, "payload": {{...}}}}')
    return examples


def write_package(directory: str | Path, manifest: Manifest, weights: Mapping[str, np.ndarray]) -> Path:
    """Write ``manifest.json`` (and ``weights.npz``, if there are weights) into ``directory`` and check them."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if weights:
        arrays: dict[str, Any] = {k: np.asarray(v) for k, v in weights.items()}
        np.savez_compressed(directory / WEIGHTS_FILE, **arrays)
    text = json.dumps(manifest.to_dict(), indent=2, sort_keys=False)
    (directory / MANIFEST_FILE).write_text(text + "\n", encoding="utf-8")
    load_weights(directory, load_manifest(directory))
    return directory


def weight_specs(weights: Mapping[str, np.ndarray]) -> dict[str, WeightSpec]:
    """The :class:`WeightSpec` of each array, for writing a manifest."""
    specs = {}
    for name, array in weights.items():
        dtype = np.asarray(array).dtype
        specs[name] = WeightSpec(tuple(np.shape(array)), dtype.str if dtype.kind == "U" else dtype.name)
    return specs
