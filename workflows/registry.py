"""The models a worker can serve: packages on disk, loaded lazily, within a memory budget.

A :class:`ModelRegistry` lists the packages of a models directory from their
manifests alone, and loads a model (weights, workflow, fact check) the first
time :meth:`ModelRegistry.get` asks for it. A package that cannot be loaded is
remembered as broken: later ``get`` calls raise the same
:class:`~workflows.errors.ModelUnavailable` without touching the disk, until a
retry is due (after 1 s, then twice as long each time, at most a minute), so a
transient fault (facts not loaded yet) heals and a bad package costs a log line
a minute, not a crash or a retry storm. A manifest that could not be read is read
again on the same backoff (it may have been caught mid-write). With a
``memory_budget`` the registry keeps the most recently used models within it and evicts the least recently
used, but never for a model used less often lately than the ones it would evict
(that one is served and dropped: a burst of rare models cannot flush the models
in steady use). A model larger than the whole budget is refused, not loaded and
evicted in a loop. Concurrent first requests for one model share one load (its
lock); loads of different models run side by side, and never block a ``get`` of
a loaded model.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workflows.base import Model
from workflows.errors import ModelUnavailable
from workflows.facts import FactStore, InMemoryFactStore
from workflows.loading import build_model
from workflows.memory import model_bytes, return_freed_memory
from workflows.packaging import MANIFEST_FILE, Manifest, load_manifest

__all__ = [
    "EXAMPLES_DIR",
    "LOAD_BUCKETS_S",
    "model_bytes",
    "FACTS_DIR_ENV",
    "MODELS_DIR_ENV",
    "ModelRegistry",
    "default_facts_dir",
    "default_models_dir",
]

log = logging.getLogger(__name__)

RETRY_FIRST_S, RETRY_MAX_S = 1.0, 60.0
"""A failed load is retried after this long, doubling up to the maximum."""

LOAD_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""The bounds of the load-seconds histogram."""

USES_HALF_LIFE = 10_000
"""Uses (requests served, all models together) after which every model's use count halves."""

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


@dataclass
class _Failure:
    error: ModelUnavailable
    attempts: int
    retry_at: float


class ModelRegistry:
    """The packages of one models directory, loaded on first use, kept within a memory budget."""

    def __init__(self, models_dir: Path, facts: FactStore, *, memory_budget: int | None = None) -> None:
        self.models_dir = Path(models_dir)
        self.facts = facts
        self.memory_budget = memory_budget
        """Bytes the loaded models may hold together (``model_bytes``); None: no limit."""
        self._lock = threading.Lock()
        """Guards the dicts below; never held while a model builds (a load takes its model's own lock)."""
        self._loading: dict[str, threading.Lock] = {}
        self._ids: tuple[str, ...] | None = None
        self._id_set: frozenset[str] = frozenset()
        self._scanned_at = 0.0
        self._manifests: dict[str, Manifest] = {}
        self._manifest_failed: dict[str, _Failure] = {}
        """Manifests that could not be read, retried with the backoff of a failed load (never cached for good)."""
        self._models: OrderedDict[str, Model] = OrderedDict()  # least recently used first
        self._sizes: dict[str, int] = {}
        self._failed: dict[str, _Failure] = {}
        self._located: dict[str, Path] = {}
        self._uses: Counter[str] = Counter()
        self._use_clock = 0
        self.counts: Counter[str] = Counter()
        """``loads``, ``failures``, ``evictions`` and ``bypasses`` (loaded, served, not kept) so far."""
        self.load_seconds = 0.0
        """Time spent loading models, in all."""
        self.load_histogram = [0] * (len(LOAD_BUCKETS_S) + 1)
        """Loads by duration: how many took at most each bound of ``LOAD_BUCKETS_S``, the last slot longer."""
        self.measured: dict[str, int] = {}
        """The bytes each model held when it last loaded (kept after eviction: placement plans with it)."""

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
            on_disk = set(found)
            found += [model_id for model_id in self._located if model_id not in on_disk]
            self._ids, self._id_set = tuple(found), frozenset(found)
            self._scanned_at = time.monotonic()
        return self._ids

    def knows(self, model_id: str) -> bool:
        """Whether ``model_id`` is among :meth:`ids` (a set lookup: workers ask it per model per batch)."""
        if self._ids is None:
            self.ids()
        return model_id in self._id_set

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
            self._fail(model_id, problem)

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
            if cached is not None:
                return cached
            failure = self._manifest_failed.get(model_id)
            if failure is not None and time.monotonic() < failure.retry_at:
                raise ModelUnavailable(str(failure.error)) from failure.error
            try:
                manifest = load_manifest(self.directory(model_id))
            except ModelUnavailable as exc:
                # A manifest being rewritten, a volume mounting late: read it again after the backoff.
                attempts = failure.attempts + 1 if failure else 1
                wait = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (attempts - 1))
                self._manifest_failed[model_id] = _Failure(exc, attempts, time.monotonic() + wait)
                raise ModelUnavailable(str(exc)) from exc
            self._manifest_failed.pop(model_id, None)
            self._manifests[model_id] = manifest
            return manifest

    def get(self, model_id: str, *, uses: int = 1) -> Model:
        """The model ``model_id``, loaded and validated on first use, then kept while the budget allows.

        ``uses`` says how many requests this call serves: what the budget weighs when it chooses what to keep.

        Raises:
            ModelUnavailable: unknown id, a package that failed to load (from the cached failure
                until its retry is due), or a model larger than the whole memory budget.
        """
        self._known(model_id)
        model = self._cached(model_id, uses=uses)
        if model is not None:
            return model
        with self._lock:
            loading = self._loading.setdefault(model_id, threading.Lock())
        with loading:  # concurrent first requests share one load; loads of other models go on meanwhile
            model = self._cached(model_id)  # loaded by the request this one waited for
            return model if model is not None else self._load(model_id)

    def _cached(self, model_id: str, *, uses: int = 0) -> Model | None:
        """The loaded model (now the most recently used), or None; raises the failure whose retry is not due."""
        with self._lock:
            if uses:
                self._count_uses(model_id, uses)
            model = self._models.get(model_id)
            if model is not None:
                self._models.move_to_end(model_id)
                return model
            failure = self._failed.get(model_id)
            if failure is not None and time.monotonic() < failure.retry_at:
                raise ModelUnavailable(str(failure.error)) from failure.error
            return None

    def _load(self, model_id: str) -> Model:
        began = time.perf_counter()
        try:
            model = build_model(self.directory(model_id), self.facts)
        except ModelUnavailable as exc:
            log.error("model %s is unavailable: %s", model_id, exc)
            raise self._failing(model_id, exc) from exc
        except Exception as exc:  # noqa: BLE001 - a broken package must never crash a worker
            log.exception("model %s failed to load", model_id)
            error = ModelUnavailable(f"model {model_id} failed to load: {type(exc).__name__}: {exc}")
            raise self._failing(model_id, error) from exc
        finally:
            elapsed = time.perf_counter() - began
            with self._lock:
                self.counts["loads"] += 1
                self.load_seconds += elapsed
                self.load_histogram[bisect.bisect_left(LOAD_BUCKETS_S, elapsed)] += 1
        size = model_bytes(model)
        evictions = self.counts["evictions"]
        with self._lock:
            if self.memory_budget is not None and size > self.memory_budget:
                error = ModelUnavailable(f"model {model_id} holds {size} bytes, more than the whole memory budget "
                                         f"of {self.memory_budget}: raise --model-memory-budget or slim the model")
                raise self._fail(model_id, error, permanent=True)
            self._failed.pop(model_id, None)
            self.measured[model_id] = size
            kept = self._admit(model_id, model, size)
        log.info("loaded model %s (%d bytes) in %.3f s%s", model_id, size, elapsed,
                 "" if kept else "; served, not kept: the models it would evict are used more")
        if self.memory_budget is not None and (not kept or self.counts["evictions"] > evictions):
            return_freed_memory()
        return model

    def _count_uses(self, model_id: str, uses: int) -> None:
        """``uses`` more uses of ``model_id``; every ``USES_HALF_LIFE`` uses in all, every count halves (recent
        use weighs most)."""
        self._uses[model_id] += uses
        self._use_clock += uses
        if self._use_clock >= USES_HALF_LIFE:
            self._use_clock = 0
            self._uses = Counter({m: n // 2 for m, n in self._uses.items() if n > 1})

    def _admit(self, model_id: str, model: Model, size: int) -> bool:
        """Keep ``model`` if the budget allows, evicting the least recently used; False if it was not kept.

        Scan resistance: a model is not kept if keeping it would evict one used more often lately (the
        caller still gets it, for the request in hand). A burst of rarely used models is served without
        flushing the models in steady use; a model whose traffic grows is kept once its uses pass theirs.
        """
        victims, freed = [], 0
        if self.memory_budget is not None:
            room = self.memory_budget - sum(self._sizes.values()) - size
            for victim in self._models:  # least recently used first
                if room + freed >= 0:
                    break
                victims.append(victim)
                freed += self._sizes[victim]
            uses = self._uses[model_id]
            if any(self._uses[v] > uses for v in victims):
                self.counts["bypasses"] += 1
                return False
        for victim in victims:
            del self._models[victim]
            self._sizes.pop(victim)
            self.counts["evictions"] += 1
            log.info("evicted model %s to stay within the memory budget", victim)
        self._models[model_id], self._sizes[model_id] = model, size
        return True

    def _failing(self, model_id: str, error: ModelUnavailable) -> ModelUnavailable:
        with self._lock:
            return self._fail(model_id, error)

    def _fail(self, model_id: str, error: ModelUnavailable, *, permanent: bool = False) -> ModelUnavailable:
        previous = self._failed.get(model_id)
        attempts = previous.attempts + 1 if previous else 1
        wait = math.inf if permanent else min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (attempts - 1))
        self._failed[model_id] = _Failure(error, attempts, time.monotonic() + wait)
        self.counts["failures"] += 1
        return ModelUnavailable(str(error))

    def needs_load(self, model_id: str) -> bool:
        """Whether a ``get`` of ``model_id`` would load it now: not loaded, and no failure whose retry is not due.

        No lock: a hint for callers deciding where to run the load (a worker runs it in a thread).
        """
        if model_id in self._models:
            return False
        failure = self._failed.get(model_id)
        if failure is None:
            return self.knows(model_id)  # an unknown id fails fast, with no load to wait for
        return time.monotonic() >= failure.retry_at

    def bytes_held(self) -> int:
        """What the loaded models hold together (``model_bytes``)."""
        with self._lock:
            return sum(self._sizes.values())

    def loaded(self) -> tuple[str, ...]:
        """The ids of the models loaded now, least recently used first (broken and evicted ones excluded)."""
        with self._lock:
            return tuple(self._models)

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
            failures = {i: f.error for i, f in self._manifest_failed.items()}
            failures.update({i: f.error for i, f in self._failed.items()})
        return {i: str(e) for i, e in failures.items()}

    def _known(self, model_id: str) -> None:
        # Unknown ids are not cached: clients may name arbitrary models. A miss rescans the directory
        # (at most once a second), so a package copied in since is found without a restart.
        if model_id in self._models or model_id in self._failed:  # loaded, or known to be unavailable (and why)
            return
        if not self.knows(model_id) and time.monotonic() - self._scanned_at >= RESCAN_INTERVAL_S:
            self._ids = None
        if not self.knows(model_id):
            raise ModelUnavailable(
                f"no model {model_id!r} in {self.models_dir} (have: {', '.join(self.ids()) or 'none'})"
            )
