"""Models as workflows: vectorised numpy code over a batch, facts behind a Protocol.

The names the streams layer uses are re-exported here; see ``docs/workflows.md``.
"""

from workflows.base import Item, Model, Outcome, Package, Workflow, WorkflowModel
from workflows.errors import ModelPackageError, ModelUnavailable, UnknownFact, WorkflowError
from workflows.facts import FactBatch, FactSpec, FactStore, InMemoryFactStore
from workflows.loading import build_model, package_sha256, validate_package
from workflows.packaging import Manifest, load_manifest
from workflows.registry import ModelRegistry, default_facts_dir, default_models_dir
from workflows.samples import sample_items

__all__ = [
    "FactBatch",
    "FactSpec",
    "FactStore",
    "InMemoryFactStore",
    "Item",
    "Manifest",
    "Model",
    "ModelPackageError",
    "ModelRegistry",
    "ModelUnavailable",
    "Outcome",
    "Package",
    "UnknownFact",
    "Workflow",
    "WorkflowError",
    "WorkflowModel",
    "build_model",
    "default_facts_dir",
    "default_models_dir",
    "load_manifest",
    "package_sha256",
    "sample_items",
    "validate_package",
]
