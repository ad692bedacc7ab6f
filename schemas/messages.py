"""The messages of the contract, as frozen typed values.

One class per message on the wire (see ``schemas/json/`` for the matching
JSON Schema documents). They are decoded once at the edge of ``streams/``
and handed inward as is; nothing inside the pipeline sees raw JSON.

Schema evolution follows one rule: a new field gets a default and an
existing field is never retyped, so old producers keep working and old
consumers ignore what they do not know.
"""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = [
    "SLICE_FIELDS",
    "TRAFFIC_CLASSES",
    "Comparison",
    "DeadLetter",
    "ErrorInfo",
    "Request",
    "Result",
    "Role",
    "ShadowResult",
    "Stage",
    "Status",
    "Traffic",
    "Unmatched",
]


class Status:
    """The ``status`` of a result."""

    OK = "ok"
    "Scored; ``result`` holds the workflow's output."

    ERROR = "error"
    "Not scored; ``error`` says why."

    EXPIRED = "expired"
    "Not scored because ``deadline_ms`` passed first."


class Traffic:
    """The ``traffic`` class of a request, which decides its topics and priority."""

    LIVE = "live"
    "A producer service waiting for the answer."

    BACKFILL = "backfill"
    "Replayed or bulk requests; served after live traffic."

    TEST = "test"
    "Synthetic traffic (probes, demos); scored like live but reported apart."


TRAFFIC_CLASSES: tuple[str, ...] = (Traffic.LIVE, Traffic.BACKFILL, Traffic.TEST)
"Every valid ``traffic`` value."


class Stage:
    """The pipeline stage that wrote a dead-letter record."""

    ROUTER = "router"
    "Rejected before routing."

    WORKER = "worker"
    "Rejected or failed on a shard worker."

    SHADOW = "shadow"
    "Rejected or failed on a shadow worker."


class Role:
    """Which side of a shadow comparison a shadow result is."""

    PRIMARY = "primary"
    "The result the client received."

    SHADOW = "shadow"
    "A candidate model's result, never sent to the client."


class Unmatched:
    """Why a comparison holds no agreement measures (its ``reason``)."""

    PRIMARY_FAILED = "primary_failed"
    "The primary side arrived but was not scored (``error`` or ``expired``)."

    SHADOW_FAILED = "shadow_failed"
    "The shadow side arrived but was not scored; the primary was."

    TIMED_OUT = "timed_out"
    "One side never arrived within the comparator's window; its status is null."


SLICE_FIELDS: tuple[str, ...] = ("country", "device", "surface", "client")
"The request context fields a shadow result keeps, to slice comparisons by."


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """Why a request was not scored: the ``error`` object of a result."""

    code: str
    "A stable code from :class:`schemas.errors.ErrorCode`."

    message: str
    "A human-readable reason that names the field at fault."

    field: str | None = None
    "The top-level request field at fault, if one is."


@dataclass(frozen=True, slots=True)
class Request:
    """A scoring request: a client asks an objective to score a business context."""

    request_id: str
    "Unique id chosen by the client (1 to 200 characters); the result carries it back."

    objective: str
    "The business use case to serve, e.g. ``title-ranking``; never a model."

    client: str
    "The calling service, as named in the routing rules."

    reply_to: str
    "The topic the result goes to, e.g. ``scoreline.replies.homepage``."

    context: dict[str, Any]
    "Business context (``user_id``, ``country``, ``device``, ...) used for routing and facts."

    payload: dict[str, Any] = dataclasses.field(default_factory=dict)
    "The objective's input, e.g. ``{\"titles\": [...]}``."

    deadline_ms: int | None = None
    "Epoch milliseconds after which the client no longer wants a score."

    traffic: str = Traffic.LIVE
    "One of :data:`TRAFFIC_CLASSES`."

    model: str | None = None
    "A model override, honoured only for clients the rules allow to override."


@dataclass(frozen=True, slots=True)
class Result:
    """The answer to one request, sent on its ``reply_to`` topic."""

    request_id: str
    "The id of the request this answers."

    objective: str | None
    "The request's objective; None when the request was too broken to read it."

    status: str
    "One of :class:`Status`."

    model: str | None = None
    "The model that scored (or would have scored) the request."

    cell: str | None = None
    "The experiment cell the request fell in, if any."

    rules_version: int | None = None
    "The version of the routing rules that routed the request."

    shard: str | None = None
    "The shard that served the request."

    result: dict[str, Any] | None = None
    "The workflow's output when ``status`` is ``ok``."

    error: ErrorInfo | None = None
    "Why the request was not scored when ``status`` is ``error`` or ``expired``."

    timings_ms: dict[str, float] = dataclasses.field(default_factory=dict)
    "Milliseconds per stage, e.g. ``routed``, ``scored``, ``total``."

    traffic: str = Traffic.LIVE
    "The request's traffic class."


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected or poison input, kept with its reason for inspection and replay."""

    code: str
    "A stable code from :class:`schemas.errors.ErrorCode`."

    message: str
    "A human-readable reason."

    field: str | None
    "The top-level request field at fault, if one is."

    request_id: str | None
    "The request id, when it could be read."

    client: str | None
    "The client, when it could be read."

    stage: str
    "One of :class:`Stage`: where the input was rejected."

    source_topic: str
    "The topic the input was read from."

    source_partition: int
    "The partition the input was read from."

    source_offset: int
    "The offset of the input in its partition."

    ts_ms: int
    "Epoch milliseconds when the record was written."

    original_b64: str
    "The original value bytes, base64-encoded (they may not be valid UTF-8)."

    original_headers: dict[str, str] = dataclasses.field(default_factory=dict)
    "The original Kafka headers, values decoded as UTF-8."

    def original(self) -> bytes:
        """Return the original value bytes, ready to be replayed."""
        return base64.b64decode(self.original_b64)


@dataclass(frozen=True, slots=True)
class ShadowResult:
    """One side (primary or shadow) of a shadowed request, for the comparator."""

    role: str
    "One of :class:`Role`."

    request_id: str
    "The id of the shadowed request."

    objective: str
    "The request's objective."

    model: str
    "The model that produced this side."

    primary_model: str
    "The model that answered the client."

    shadow_models: list[str]
    "Every candidate model the request was copied to."

    cell: str | None
    "The experiment cell the request fell in, if any."

    rules_version: int | None
    "The version of the routing rules that routed the request."

    shard: str | None
    "The shard that served this side."

    status: str
    "One of :class:`Status`."

    result: dict[str, Any] | None
    "The workflow's output when ``status`` is ``ok``."

    error: ErrorInfo | None
    "Why this side was not scored, otherwise None."

    latency_ms: float
    "Milliseconds this side took to score."

    traffic: str
    "The request's traffic class."

    context: dict[str, Any]
    "The request context cut down to :data:`SLICE_FIELDS`."

    ts_ms: int
    "Epoch milliseconds when this side was scored."


@dataclass(frozen=True, slots=True)
class Comparison:
    """One primary-versus-candidate comparison of a shadowed request, for analysts.

    The comparator writes one per (request, shadow model) to
    ``scoreline.shadow-comparisons``, keyed by request id.
    """

    request_id: str
    "The id of the shadowed request."

    objective: str
    "The request's objective."

    primary_model: str
    "The model that answered the client."

    shadow_model: str
    "The candidate model compared with it."

    matched: bool
    "Whether both sides arrived and were scored, so that ``agreement`` holds measures."

    reason: str | None
    "One of :class:`Unmatched` when ``matched`` is false, else None."

    rules_version: int | None
    "The version of the routing rules that routed the request."

    cell: str | None
    "The experiment cell the request fell in, if any."

    primary_status: str | None
    "The primary side's :class:`Status`; None when it never arrived."

    shadow_status: str | None
    "The shadow side's :class:`Status`; None when it never arrived."

    primary_latency_ms: float | None
    "Milliseconds the primary took to score; None when it never arrived."

    shadow_latency_ms: float | None
    "Milliseconds the candidate took to score; None when it never arrived."

    agreement: dict[str, Any]
    "Objective-aware measures (see :mod:`workflows.agreement`); empty when not ``matched``."

    traffic: str
    "The request's traffic class."

    context: dict[str, Any]
    "The request context cut down to :data:`SLICE_FIELDS`."

    ts_ms: int
    "Epoch milliseconds of the later side's scoring; for ``timed_out``, when the window closed."
