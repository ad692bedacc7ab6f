"""The models a worker can serve: packages on disk, loaded lazily.

A :class:`ModelRegistry` lists the packages of a models directory from their
manifests alone, and loads a model (weights, workflow, fact check) the first
time :meth:`ModelRegistry.get` asks for it. A package that cannot be loaded is
remembered as broken: every later ``get`` raises the same
:class:`~workflows.errors.ModelUnavailable` without touching the disk again,
so one bad package costs one log line, not a crash or a retry storm.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from workflows.base import Model
from workflows.errors import ModelUnavailable
from workflows.facts import FactStore, InMemoryFactStore
from workflows.loading import build_model
from workflows.packaging import MANIFEST_FILE, Manifest, load_manifest

__all__ = [
    "EXAMPLES_DIR",
    "FACTS_DIR_ENV",
    "MODELS_DIR_ENV",
    "ModelRegistry",
    "default_facts_dir",
    "default_models_dir",
]

log = logging.getLogger(__name__)

RESCAN_INTERVAL_S = 1.0
"""A request for a model the directory did not hold rescans it, but not more often than this."""

MODELS_DIR_ENV = "SCORELINE_MODELS_DIR"
FACTS_DIR_ENV = "SCORELINE_FACTS_DIR"
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "scoreline" / "examples"
"""The example configuration (``rules.json``, ``models/``, ``facts/``) shipped inside the scoreline
distribution, beside this package: in the repository and in an installed wheel alike."""


def default_models_dir() -> Path:
    """``$SCORELINE_MODELS_DIR``, else the shipped example models."""
    return Path(os.environ.get(MODELS_DIR_ENV) or EXAMPLES_DIR / "models")


def default_facts_dir() -> Path:
    """``$SCORELINE_FACTS_DIR``, else the shipped example facts."""
    return Path(os.environ.get(FACTS_DIR_ENV) or EXAMPLES_DIR / "facts")


class ModelRegistry:
    """The packages of one models directory, loaded on first use and cached."""

    def __init__(self, models_dir: Path, facts: FactStore) -> None:
        self.models_dir = Path(models_dir)
        self.facts = facts
        self._lock = threading.Lock()
        self._ids: tuple[str, ...] | None = None
        self._scanned_at = 0.0
        self._manifests: dict[str, Manifest | ModelUnavailable] = {}
        self._models: dict[str, Model | ModelUnavailable] = {}
        self._located: dict[str, Path] = {}

    @classmethod
    def default(cls) -> ModelRegistry:
        """A registry over the shipped example models and facts (or the env overrides)."""
        return cls(default_models_dir(), InMemoryFactStore.from_dir(default_facts_dir()))

    def ids(self) -> tuple[str, ...]:
        """Every package id (``name@version``) in the directory, broken ones included; no weights read."""
        if self._ids is None:
            found = []
            if self.models_dir.is_dir():
                for entry in sorted(self.models_dir.iterdir()):
                    if entry.is_dir() and ("@" in entry.name or (entry / MANIFEST_FILE).exists()):
                        found.append(entry.name)
            found += [model_id for model_id in self._located if model_id not in found]
            self._ids = tuple(found)
            self._scanned_at = time.monotonic()
        return self._ids

    def register(self, model_id: str, directory: Path) -> None:
        """Serve ``model_id`` from ``directory`` too (a package pulled from a repository).

        A package of ``models_dir`` with the same id wins, for development.
        """
        with self._lock:
            self._located[model_id] = Path(directory)
            self._ids = None

    def unavailable(self, model_id: str, problem: ModelUnavailable) -> None:
        """Record that ``model_id`` cannot be had (e.g. its repository copy does not verify): ``get`` raises it."""
        with self._lock:
            self._located.pop(model_id, None)
            self._models[model_id] = problem

    def directory(self, model_id: str) -> Path:
        """Where the package ``model_id`` is: ``models_dir``, else where :meth:`register` put it."""
        local = self.models_dir / model_id
        return local if local.is_dir() or model_id not in self._located else self._located[model_id]

    def objectives(self) -> dict[str, tuple[str, ...]]:
        """Model ids per objective, from the readable manifests."""
        out: dict[str, list[str]] = {}
        for model_id in self.ids():
            try:
                out.setdefault(self.manifest(model_id).objective, []).append(model_id)
            except ModelUnavailable:
                continue
        return {objective: tuple(ids) for objective, ids in out.items()}

    def manifest(self, model_id: str) -> Manifest:
        """The manifest of ``model_id`` (read once; weights untouched).

        Raises:
            ModelUnavailable: no such package, or its manifest is broken.
        """
        self._known(model_id)
        with self._lock:
            cached = self._manifests.get(model_id)
            if cached is None:
                try:
                    cached = load_manifest(self.directory(model_id))
                except ModelUnavailable as exc:
                    cached = exc
                self._manifests[model_id] = cached
        if isinstance(cached, ModelUnavailable):
            raise ModelUnavailable(str(cached)) from cached
        return cached

    def get(self, model_id: str) -> Model:
        """The model ``model_id``, loaded and validated on first use.

        Raises:
            ModelUnavailable: unknown id, or a package that failed to load
                (then on every call, from the cached failure).
        """
        self._known(model_id)
        with self._lock:
            cached = self._models.get(model_id)
            if cached is None:
                try:
                    cached = build_model(self.directory(model_id), self.facts)
                    log.info("loaded model %s", model_id)
                except ModelUnavailable as exc:
                    log.error("model %s is unavailable: %s", model_id, exc)
                    cached = exc
                except Exception as exc:  # noqa: BLE001 - a broken package must never crash a worker
                    log.exception("model %s failed to load", model_id)
                    cached = ModelUnavailable(f"model {model_id} failed to load: {type(exc).__name__}: {exc}")
                self._models[model_id] = cached
        if isinstance(cached, ModelUnavailable):
            raise ModelUnavailable(str(cached)) from cached
        return cached

    def loaded(self) -> tuple[str, ...]:
        """The ids of the models loaded so far (broken ones excluded)."""
        with self._lock:
            return tuple(i for i, m in self._models.items() if not isinstance(m, ModelUnavailable))

    def describe(self, model_id: str) -> dict[str, Any]:
        """What ``model_id`` is, from its manifest: name, version, objective, workflow, facts, metrics."""
        manifest = self.manifest(model_id)
        return {
            "name": manifest.name,
            "version": manifest.version,
            "objective": manifest.objective,
            "workflow": manifest.workflow,
            "facts": list(manifest.facts),
            "metrics": dict(manifest.metrics),
            "baseline_metrics": dict(manifest.baseline_metrics),
        }

    def list_models(self) -> list[dict[str, Any]]:
        """:meth:`describe` of every package whose manifest is readable (see :meth:`problems`)."""
        out = []
        for model_id in self.ids():
            try:
                out.append(self.describe(model_id))
            except ModelUnavailable:
                continue
        return out

    def problems(self) -> dict[str, str]:
        """Why each unreadable or unloadable package failed, by id (only packages tried so far)."""
        with self._lock:
            failures = {**self._manifests, **self._models}
        return {i: str(e) for i, e in failures.items() if isinstance(e, ModelUnavailable)}

    def _known(self, model_id: str) -> None:
        # Unknown ids are not cached: clients may name arbitrary models. A miss rescans the directory
        # (at most once a second), so a package copied in since is found without a restart.
        if model_id in self._models:  # loaded, or known to be unavailable (and why)
            return
        if model_id not in self.ids() and time.monotonic() - self._scanned_at >= RESCAN_INTERVAL_S:
            self._ids = None
        if model_id not in self.ids():
            raise ModelUnavailable(
                f"no model {model_id!r} in {self.models_dir} (have: {', '.join(self.ids()) or 'none'})"
            )
