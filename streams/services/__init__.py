"""The roles scoreline runs: their shared batch loop, the router, the workers, the comparator, and the pipeline."""

from streams.services.batch import BACKFILL_SUFFIX, BatchService
from streams.services.comparator import Comparator
from streams.services.pipeline import ROLES, Pipeline, PipelineOptions
from streams.services.router import Router
from streams.services.tenancy import ClientRateLimiter, RequestSource, request_topic_pattern, source_of
from streams.services.worker import ShadowWorker, Worker

__all__ = [
    "BACKFILL_SUFFIX",
    "ROLES",
    "BatchService",
    "ClientRateLimiter",
    "Comparator",
    "Pipeline",
    "PipelineOptions",
    "RequestSource",
    "Router",
    "ShadowWorker",
    "Worker",
    "request_topic_pattern",
    "source_of",
]
