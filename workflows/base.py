"""What a model is to the rest of scoreline, and the stages a workflow runs.

A *model* scores a batch of :class:`Item` (business context plus payload) and
returns one :class:`Outcome` per item. Every model in this package is a
*workflow* run by :class:`WorkflowModel`, in one vectorised pass per batch::

    items ─► preprocess ─► fact_keys ─► FactStore.lookup (once per fact) ─► features ─► predict
          ─► postprocess ─► outcomes

A workflow validates each item in ``preprocess``; an item it cannot score
becomes an ``invalid_payload`` outcome naming the field, and the rest of the
batch is scored as usual.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol, runtime_checkable

import numpy as np

from schemas.errors import ErrorCode
from schemas.messages import ErrorInfo
from workflows.errors import ModelPackageError
from workflows.facts import FactBatch, FactStore

if TYPE_CHECKING:
    from workflows.onnx import OnnxModel
    from workflows.packaging import Manifest

__all__ = [
    "Item",
    "Model",
    "Outcome",
    "Package",
    "Workflow",
    "WorkflowModel",
    "check_user_request",
    "invalid",
]

log = logging.getLogger(__name__)


class Item(NamedTuple):
    """One thing to score: the request's business context and payload."""

    context: Mapping[str, Any]
    "Who and where: ``user_id``, ``country``, ``device``, ``surface``."

    payload: Mapping[str, Any]
    "What to score: ``titles`` to rank, a payment to check."


class Outcome(NamedTuple):
    """The result of scoring one item: exactly one of ``value`` and ``error`` is set."""

    value: dict[str, Any] | None
    "The objective's result object, e.g. ``{'ranking': [...]}``."

    error: ErrorInfo | None
    "Why the item was not scored."

    @property
    def ok(self) -> bool:
        """Whether the item was scored."""
        return self.error is None


def invalid(field: str, message: str) -> Outcome:
    """An ``invalid_payload`` outcome naming ``field`` (e.g. ``payload.titles``)."""
    return Outcome(None, ErrorInfo(code=ErrorCode.INVALID_PAYLOAD, message=message, field=field))


def check_user_request(item: Item) -> Outcome | None:
    """The checks every per-user workflow shares: an object context with a ``user_id``, an object payload."""
    # type() first: decoded requests hold plain dicts, and an ABC isinstance costs five times more.
    context, payload = item.context, item.payload
    if type(context) is not dict and not isinstance(context, Mapping):
        return invalid("context", "context must be an object")
    user_id = context.get("user_id")
    if not isinstance(user_id, str) or not user_id:
        return invalid("context.user_id", "context.user_id must be a non-empty string")
    if type(payload) is not dict and not isinstance(payload, Mapping):
        return invalid("payload", "payload must be an object")
    return None


class Package(NamedTuple):
    """The files a workflow was loaded from, handed to :meth:`Workflow.load` once."""

    directory: Path
    "The package directory (``<name>@<version>/``): read your own files from here."

    manifest: Manifest
    "The package's manifest."

    sha256: str
    "What exactly was loaded: the sha256 of the package's files."

    onnx: OnnxModel | None = None
    "The package's ONNX model, loaded once, when the manifest declares one."


@runtime_checkable
class Model(Protocol):
    """A deployed model: scores batches for one objective."""

    id: str
    "``<name>@<version>``, e.g. ``title-ranking@v1``."

    objective: str
    "The objective it serves, e.g. ``title-ranking``."

    manifest: Manifest
    "Its package manifest."

    def score_batch(self, items: Sequence[Item]) -> list[Outcome]:
        """Score ``items`` in one vectorised pass; one outcome per item, in order."""
        ...


class Workflow(ABC):
    """The stages of a model, over a whole batch at a time.

    A subclass declares the facts it looks up (none by default) and is built
    from a package's weights (none for a workflow with no trained component)
    and parameters, then :meth:`load` is called once with the package's files.
    ``preprocess`` returns whatever the later stages need; it is opaque to the
    runner except through :meth:`fact_keys`. A workflow of one's own lives in
    its package (``workflow.py``, named ``workflow:Class`` by the manifest).
    """

    name: ClassVar[str] = ""
    "A built-in workflow's name, as a manifest's ``workflow`` field names it (plug-ins need none)."

    facts: ClassVar[tuple[str, ...]] = ()
    "The facts the workflow looks up, each once per batch."

    def __init__(self, weights: Mapping[str, np.ndarray], params: Mapping[str, Any]) -> None:
        self.weights = dict(weights)
        self.params = dict(params)
        self.package: Package | None = None

    def load(self, package: Package) -> None:
        """Called once after construction with the package's files: open what ``predict`` needs.

        The default keeps ``package``; override it (calling ``super().load(package)``) to build
        sessions or read vocabularies once per model load, never per batch.
        """
        self.package = package

    @property
    def onnx(self) -> OnnxModel:
        """The package's ONNX model (``self.onnx.run(features)`` once per batch in ``predict``)."""
        if self.package is None or self.package.onnx is None:
            raise ModelPackageError(f"workflow {type(self).__name__} runs an ONNX model but its manifest declares "
                                    "none (add an 'onnx' field)")
        return self.package.onnx

    def require(self, *names: str) -> tuple[np.ndarray, ...]:
        """Return the named weight arrays, or raise :class:`ModelPackageError`."""
        missing = [n for n in names if n not in self.weights]
        if missing:
            raise ModelPackageError(f"workflow {self.name!r} needs weights {missing} that the package lacks")
        return tuple(self.weights[n] for n in names)

    @abstractmethod
    def preprocess(self, items: Sequence[Item]) -> Any:
        """Validate and parse the batch; remember which items are invalid and why."""

    @abstractmethod
    def fact_keys(self, pre: Any) -> Mapping[str, Sequence[str]]:
        """The keys to look up, per declared fact, for the batch."""

    @abstractmethod
    def features(self, pre: Any, facts: Mapping[str, FactBatch]) -> Any:
        """Compute the feature arrays of the valid items."""

    @abstractmethod
    def predict(self, features: Any) -> np.ndarray:
        """Score the features: one numpy computation for the batch."""

    @abstractmethod
    def postprocess(self, pre: Any, scores: np.ndarray) -> list[Outcome]:
        """Turn scores into one outcome per input item, in input order."""


class WorkflowModel:
    """Runs a :class:`Workflow` as a :class:`Model` over a :class:`FactStore`."""

    def __init__(self, manifest: Manifest, workflow: Workflow, facts: FactStore, *, sha256: str | None = None) -> None:
        self.manifest = manifest
        self.sha256 = sha256
        """The sha256 of the package files it was loaded from (``workflows.loading.package_sha256``)."""
        self.id = manifest.id
        self.objective = manifest.objective
        self.workflow = workflow
        self._facts = facts

    def score_batch(self, items: Sequence[Item]) -> list[Outcome]:
        """Score ``items`` in one pass: one lookup per fact, one predict call.

        A failure inside the workflow (a bug, a broken fact source) does not
        escape: every item of the batch gets a ``workflow_error`` outcome,
        because each request must still end as exactly one result.
        """
        if not items:
            return []
        wf = self.workflow
        try:
            pre = wf.preprocess(items)
            keys = wf.fact_keys(pre)
            facts = {fact: self._facts.lookup(fact, keys[fact]) for fact in wf.facts}
            scores = wf.predict(wf.features(pre, facts))
            outcomes = wf.postprocess(pre, scores)
        except Exception as exc:  # noqa: BLE001 - one bad batch must not stop a worker
            log.exception("model %s failed on a batch of %d items", self.id, len(items))
            error = ErrorInfo(code=ErrorCode.WORKFLOW_ERROR, message=f"{self.id} failed: {type(exc).__name__}: {exc}")
            return [Outcome(None, error) for _ in items]
        if len(outcomes) != len(items):  # a workflow bug; never hand back a misaligned batch
            error = ErrorInfo(code=ErrorCode.WORKFLOW_ERROR, message=f"{self.id} returned a misaligned batch")
            return [Outcome(None, error) for _ in items]
        return outcomes

    def __repr__(self) -> str:
        return f"WorkflowModel({self.id!r}, workflow={self.manifest.workflow!r})"
