"""Errors raised by the workflows package.

The exception tree (all derive from :class:`schemas.errors.ScorelineError`)::

    ScorelineError
     ├── ModelUnavailable        a model cannot be served (unknown id, broken package)   model_unavailable
     │    └── ModelPackageError  a package on disk breaks the format (manifest, weights)  model_unavailable
     ├── UnknownFact             a workflow asked a fact store for a fact it lacks        workflow_error
     └── WorkflowError           a workflow failed while scoring a batch                  workflow_error

Per-item problems in a request (a missing ``payload.titles``, an amount that
is not a number) are never raised: they come back as an error
:class:`~workflows.base.Outcome` with code ``invalid_payload``.
"""

from __future__ import annotations

from schemas.errors import ErrorCode, ScorelineError

__all__ = ["ModelPackageError", "ModelUnavailable", "UnknownFact", "WorkflowError"]


class ModelUnavailable(ScorelineError):
    """The model cannot be served: no such package, or its package is broken."""

    code = ErrorCode.MODEL_UNAVAILABLE


class ModelPackageError(ModelUnavailable):
    """A model package on disk breaks the package format.

    A subclass of :class:`ModelUnavailable` so that a caller serving models
    catches one type; the message names the package directory and the fault.
    """


class UnknownFact(ScorelineError):
    """A fact store was asked for a fact it does not hold."""

    code = ErrorCode.WORKFLOW_ERROR


class WorkflowError(ScorelineError):
    """A workflow failed while scoring a batch: a bug or a broken fact source."""

    code = ErrorCode.WORKFLOW_ERROR
