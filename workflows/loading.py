"""Turning a model package into a model: its workflow class found, built, bound to its files and facts.

A manifest's ``workflow`` names one of three things:

- a built-in workflow (``title_ranking``, ``fraud_score``: :data:`workflows.catalog.WORKFLOWS`);
- ``module:Class``, the module looked up first **in the package directory itself**
  (``<module>.py``, or a folder ``<module>/`` with an ``__init__.py`` for several files with
  relative imports), then among the installed modules;
- a name that an installed distribution offers in the entry-point group
  ``scoreline.workflows`` (``name = "module:Class"``).

A package's own module is imported by file under a name of its own
(``scoreline_model_<id>_<sha256 prefix>``), never by its bare name, so two packages that each
ship a ``workflow.py`` never see each other's module, and neither shadows an installed one.

Trust: a package's code runs inside the worker with the worker's rights (files, network,
credentials). Serve packages only from a models directory (or repository) that the operator
trusts, as you would install a Python package; :func:`package_sha256` identifies exactly
which bytes were loaded, and ``scoreline models describe`` and ``scoreline lineage`` show it.

Every way a package can fail (module missing, not importable, raising on import, no such
class, a class that is not a :class:`~workflows.base.Workflow`, a class that fails to build)
is a :class:`~workflows.errors.ModelPackageError` (``model_unavailable``) naming the package
and the cause; the registry caches it and the worker keeps serving every other model.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import re
import sys
import threading
import types
from pathlib import Path
from typing import Any

import numpy as np

from schemas.errors import ScorelineError
from workflows.base import Package, Workflow, WorkflowModel
from workflows.catalog import WORKFLOWS
from workflows.errors import ModelPackageError, ModelUnavailable
from workflows.facts import FactStore
from workflows.onnx import OnnxModel
from workflows.packaging import Manifest, load_manifest, load_weights

__all__ = [
    "ENTRY_POINT_GROUP",
    "build_model",
    "load_package",
    "package_files",
    "package_sha256",
    "resolve_workflow",
    "validate_package",
]

ENTRY_POINT_GROUP = "scoreline.workflows"
"""The entry-point group through which installed distributions offer workflows by name."""

_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_CLASS = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SKIPPED = {"__pycache__", ".ipynb_checkpoints"}


def _fail(directory: Path, message: str) -> ModelPackageError:
    return ModelPackageError(f"model package {directory}: {message}")


def package_files(directory: str | Path) -> list[Path]:
    """The files that make up a package, in path order: everything but caches (``__pycache__``, ``*.pyc``)."""
    directory = Path(directory)
    return [file for file in sorted(directory.rglob("*"))
            if file.is_file() and not (_SKIPPED & set(file.relative_to(directory).parts)) and file.suffix != ".pyc"]


def package_sha256(directory: str | Path) -> str:
    """The sha256 of a package: every file's relative path and bytes (:func:`package_files`), in path order."""
    directory = Path(directory)
    digest = hashlib.sha256()
    for file in package_files(directory):
        digest.update(file.relative_to(directory).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


_DIGESTS: dict[Path, tuple[tuple[tuple[str, int, int], ...], str]] = {}
_DIGESTS_LOCK = threading.Lock()


def known_package_sha256(directory: str | Path) -> tuple[str, bool]:
    """:func:`package_sha256`, and whether it was known: hashed again only when a file's path, size or
    modification time changed since it was last hashed.

    For reloading a package an evicted model came from (a load would otherwise spend more time
    hashing than reading its weights); verifying a download hashes in full (``package_sha256``).
    """
    directory = Path(directory).resolve()
    signature = tuple((f.relative_to(directory).as_posix(), st.st_size, st.st_mtime_ns)
                      for f in package_files(directory) for st in (f.stat(),))
    with _DIGESTS_LOCK:
        known = _DIGESTS.get(directory)
    if known is not None and known[0] == signature:
        return known[1], True
    sha256 = package_sha256(directory)
    with _DIGESTS_LOCK:
        _DIGESTS[directory] = (signature, sha256)
    return sha256, False


def resolve_workflow(directory: str | Path, manifest: Manifest, sha256: str | None = None) -> type[Workflow]:
    """The workflow class ``manifest.workflow`` names (see the module docstring for where it is looked up).

    Raises:
        ModelPackageError: it names nothing that exists, its module fails to import, or the
            class is not a ``Workflow`` subclass.
    """
    directory = Path(directory)
    spec = manifest.workflow
    if ":" not in spec:
        if spec in WORKFLOWS:
            return WORKFLOWS[spec]
        entry = _entry_points().get(spec)
        if entry is None:
            known = ", ".join(sorted({*WORKFLOWS, *_entry_points()}))
            raise _fail(directory, f"workflow {spec!r} is unknown: not a built-in workflow nor an installed "
                                   f"plug-in (have: {known}); name your own as 'module:Class'")
        try:
            found = entry.load()
        except Exception as exc:  # noqa: BLE001 - an installed plug-in that fails to import is a broken package
            raise _fail(directory, f"workflow {spec!r} (entry point {entry.value}) failed to import: "
                                   f"{type(exc).__name__}: {exc}") from exc
        return _checked(directory, spec, found)
    module_name, _, class_name = spec.partition(":")
    if not _MODULE.match(module_name) or not _CLASS.match(class_name):
        raise _fail(directory, f"workflow {spec!r} must be 'module:Class' (a dotted module path and a class name)")
    module = _package_module(directory, module_name, manifest.id, sha256 or package_sha256(directory))
    if module is None:
        module = _installed_module(directory, module_name)
    found = getattr(module, class_name, None)
    if found is None:
        raise _fail(directory, f"workflow {spec!r}: module {module_name!r} has no {class_name!r}")
    return _checked(directory, spec, found)


def _checked(directory: Path, spec: str, found: Any) -> type[Workflow]:
    if not isinstance(found, type) or not issubclass(found, Workflow):
        raise _fail(directory, f"workflow {spec!r} is not a subclass of workflows.Workflow "
                               f"(got {type(found).__name__} {getattr(found, '__qualname__', found)!r})")
    return found


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {e.name: e for e in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _package_module(directory: Path, module_name: str, model_id: str, sha256: str) -> types.ModuleType | None:
    """The module from the package's own files, imported under a name of its own; None if it has none."""
    top, _, rest = module_name.partition(".")
    file, folder = directory / f"{top}.py", directory / top / "__init__.py"
    if folder.is_file():
        location, search = folder, [str(folder.parent)]
    elif file.is_file() and not rest:
        location, search = file, None
    else:
        return None
    own = f"scoreline_model_{re.sub(r'[^A-Za-z0-9]', '_', model_id)}_{sha256[:12]}"
    module = sys.modules.get(own)
    if module is None:
        spec = importlib.util.spec_from_file_location(own, location, submodule_search_locations=search)
        if spec is None or spec.loader is None:
            raise _fail(directory, f"cannot import {location.name} as a module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[own] = module  # before running it: dataclasses and relative imports look it up there
        try:
            spec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:  # a package calling sys.exit() must not end the worker
            sys.modules.pop(own, None)
            raise _fail(directory, f"{location.relative_to(directory)} raised on import: "
                                   f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            sys.modules.pop(own, None)
            raise
    if not rest:
        return module
    try:
        return importlib.import_module(f"{own}.{rest}")
    except Exception as exc:  # noqa: BLE001 - the package's own submodule failed: a broken package
        raise _fail(directory, f"module {module_name!r} of the package failed to import: "
                               f"{type(exc).__name__}: {exc}") from exc


def _installed_module(directory: Path, module_name: str) -> types.ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise _fail(directory, f"workflow module {module_name!r} is neither in the package "
                                   f"({module_name.split('.')[0]}.py) nor installed") from exc
        raise _fail(directory, f"workflow module {module_name!r} failed to import: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - an installed module that raises on import is a broken package
        raise _fail(directory, f"workflow module {module_name!r} raised on import: "
                               f"{type(exc).__name__}: {exc}") from exc


def load_package(directory: str | Path) -> tuple[Manifest, dict[str, np.ndarray]]:
    """Check a package's manifest, workflow and weights; return the manifest and the weights.

    Raises:
        ModelPackageError: anything :func:`~workflows.packaging.load_manifest` rejects, a
            workflow that cannot be found or imported, facts that disagree with the
            workflow's, or weights that disagree with the manifest.
    """
    directory = Path(directory)
    manifest = load_manifest(directory)
    _check_facts(directory, manifest, resolve_workflow(directory, manifest))
    return manifest, load_weights(directory, manifest)


def validate_package(directory: str | Path) -> Manifest:
    """Check a package completely (manifest, workflow, weights) and return its manifest."""
    return load_package(directory)[0]


def _check_facts(directory: Path, manifest: Manifest, workflow: type[Workflow]) -> None:
    if set(workflow.facts) != set(manifest.facts):
        raise _fail(directory, f"manifest declares facts {sorted(manifest.facts)} but workflow "
                               f"{manifest.workflow!r} looks up {sorted(workflow.facts)}")


def build_model(directory: str | Path, facts: FactStore) -> WorkflowModel:
    """Load the package in ``directory``, build its workflow and bind it to ``facts``.

    Raises:
        ModelPackageError: the package is broken, or its workflow class fails to build.
        ModelUnavailable: the fact store lacks a fact the model needs.
    """
    directory = Path(directory)
    sha256, unchanged = known_package_sha256(directory)
    manifest = load_manifest(directory)
    cls = resolve_workflow(directory, manifest, sha256)
    _check_facts(directory, manifest, cls)
    weights = load_weights(directory, manifest, verified=unchanged)
    try:
        workflow = cls(weights, manifest.params)
        session = OnnxModel(directory, manifest.onnx) if manifest.onnx is not None else None
        workflow.load(Package(directory, manifest, sha256, session))
    except ScorelineError:
        raise
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - whatever the class raises, the package is broken
        raise _fail(directory, f"workflow {manifest.workflow!r} failed to build: {type(exc).__name__}: {exc}") from exc
    for fact in manifest.facts:
        try:
            facts.lookup(fact, [])
        except ScorelineError as exc:
            raise ModelUnavailable(f"model {manifest.id}: fact {fact!r} is not available: {exc}") from exc
    return WorkflowModel(manifest, workflow, facts, sha256=sha256)
