"""What health, readiness and metrics read of a running pipeline, as small Protocols.

The HTTP server serves a :class:`Probe`; the probe (``PipelineMetrics``) reads the pipeline
and its services through :class:`PipelineView` and :class:`ServiceView`. Neither knows the
classes of :mod:`streams.services`, so operations code sits below the services it watches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from routing import Rules
from streams.transport.protocols import Consumer

__all__ = ["CONTENT_TYPE", "PipelineView", "Probe", "ServiceView"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format, as :meth:`Probe.exposition` returns it."""


class Probe(Protocol):
    """What ``/metrics``, ``/healthz`` and ``/readyz`` answer from."""

    def exposition(self) -> bytes:
        """The current figures in the Prometheus text format."""

    def health(self) -> tuple[bool, str]:
        """Whether the process is live, and why not."""

    def readiness(self) -> tuple[bool, str]:
        """Whether the process is ready to serve, and why not."""


class ServiceView(Protocol):
    """One running role, as operations code sees it."""

    role: str
    group_id: str
    metrics: Any
    """The role's per-batch tallies (a ``ServiceMetrics``), rebound by the pipeline's metrics."""

    @property
    def consumer(self) -> Consumer | None:
        """The role's group member, once started."""

    @property
    def failed(self) -> BaseException | None:
        """The exception that ended the role's loop, if one did."""


class PipelineView(Protocol):
    """A pipeline, as operations code sees it: its rules, its model registry, its roles."""

    @property
    def rules(self) -> Callable[[], Rules]:
        """The rules snapshot in force (called for each read)."""

    @property
    def registry(self) -> Any:
        """The pipeline's model registry (``workflows.ModelRegistry``)."""

    @property
    def services(self) -> Sequence[Any]:
        """The roles running (``ServiceView``-shaped where they are batch services)."""
