"""A worker's model loads: pulled from the repository and built in the background, one task per model.

The worker asks :meth:`ModelLoads.ready` for each model of a batch. A model that is loaded (or
known to fail) is ready; one that is not gets a load started, and its requests wait (see
:mod:`streams.services.waiting`) while the event loop, the other models' batches, the other roles
and the metrics port go on. A model is built in a thread, at most ``CONCURRENT_LOADS`` at a time,
and held (:meth:`take`) until the requests that waited for it are scored, whether the registry's
budget keeps it or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Container
from typing import TYPE_CHECKING

from schemas.errors import ScorelineError
from workflows import Model, ModelRegistry, ModelUnavailable

if TYPE_CHECKING:
    from streams.repository import ModelRepository

__all__ = ["CONCURRENT_LOADS", "ModelLoads"]

log = logging.getLogger(__name__)

CONCURRENT_LOADS = 2
"""Models a worker loads at once (each in a thread): more would hold more memory past the budget while they load."""


class ModelLoads:
    """The loads under way for one worker, and the models just loaded for the requests that waited."""

    def __init__(self, registry: ModelRegistry, repository: ModelRepository | None, *, role: str,
                 waiting: Callable[[str], int] = lambda model_id: 0) -> None:
        self.registry = registry
        self.repository = repository
        self.role = role
        self._waiting = waiting
        """How many requests wait for a model: what the registry weighs when it chooses what to keep."""
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._fresh: dict[str, Model] = {}
        self._slots = asyncio.Semaphore(CONCURRENT_LOADS)

    def __bool__(self) -> bool:
        return bool(self._tasks)

    def ready(self, model_id: str) -> bool:
        """Whether ``model_id`` can be scored now (loaded, or known to fail); if not, its load is under way."""
        task = self._tasks.get(model_id)
        if task is not None:
            if not task.done():
                return False
            del self._tasks[model_id]
            return True  # loaded or failed: scoring says which
        if self.needs_load(model_id):
            self.start(model_id)
            return False
        return True

    def done(self, model_id: str) -> bool:
        """Whether no load of ``model_id`` is under way."""
        task = self._tasks.get(model_id)
        return task is None or task.done()

    def needs_load(self, model_id: str) -> bool:
        """Whether ``model_id`` must be pulled from the repository or loaded before it can be scored."""
        return (self.repository is not None and not self.registry.knows(model_id)) or \
            self.registry.needs_load(model_id)

    def start(self, model_id: str) -> asyncio.Task[None]:
        """The load of ``model_id``, started if it is not under way."""
        task = self._tasks.get(model_id)
        if task is None:
            task = self._tasks[model_id] = asyncio.create_task(self._prepare(model_id),
                                                               name=f"scoreline-load-{model_id}")
        return task

    def take(self, model_id: str) -> Model | None:
        """The model just loaded for the requests that waited for it (once), if it was."""
        return self._fresh.pop(model_id, None)

    def forget_finished(self, waited_for: Container[str]) -> None:
        """Drop finished loads nothing waits for (their requests expired): a model is held only while needed."""
        for model_id, task in list(self._tasks.items()):
            if task.done() and model_id not in waited_for:
                del self._tasks[model_id]
                self._fresh.pop(model_id, None)

    async def preload(self, models: tuple[str, ...]) -> None:
        """Load ``models`` one after another, stopping where the memory budget would start evicting."""
        registry = self.registry
        evictions = registry.counts["evictions"]
        for i, model_id in enumerate(models):
            if model_id in self._tasks or not self.needs_load(model_id):
                continue
            if registry.memory_budget is not None and (
                    registry.counts["evictions"] > evictions or
                    registry.bytes_held() + registry.measured.get(model_id, 0) > registry.memory_budget):
                log.info("%s: the memory budget is full; %d more models of the rules load on first need",
                         self.role, len(models) - i)
                return
            await asyncio.shield(self.start(model_id))  # a cancelled preload leaves the load to finish

    def cancel(self) -> None:
        """Stop every load under way (a worker stopping)."""
        for task in self._tasks.values():
            task.cancel()

    async def _prepare(self, model_id: str) -> None:
        """Pull ``model_id`` if only the repository has it, then load it in a thread."""
        try:
            if self.repository is not None:
                await self._resolve(model_id)
            if self.registry.needs_load(model_id):
                async with self._slots:
                    await asyncio.to_thread(self._load, model_id, self._waiting(model_id))
        except Exception:  # noqa: BLE001 - a repository that cannot be read: the model is unavailable, for now
            log.exception("%s: preparing model %s failed", self.role, model_id)

    async def _resolve(self, model_id: str) -> None:
        """Pull ``model_id`` from the repository into the cache the first time it is needed."""
        assert self.repository is not None
        if self.registry.knows(model_id):
            return
        try:
            directory = await self.repository.ensure(model_id)
        except ModelUnavailable as exc:  # held by the repository but not verifiable: never served
            log.error("%s: %s", self.role, exc)
            self.registry.unavailable(model_id, exc)
            return
        if directory is not None:
            self.registry.register(model_id, directory)

    def _load(self, model_id: str, waiting: int) -> None:
        """Load ``model_id`` if it can be (a failure is the registry's to remember; scoring reports it)."""
        with contextlib.suppress(ScorelineError):
            self._fresh[model_id] = self.registry.get(model_id, uses=waiting)
