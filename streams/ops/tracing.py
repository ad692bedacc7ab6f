"""W3C trace context through scoreline, with optional OpenTelemetry spans per batch stage.

Propagation needs nothing installed: the router copies a request's ``traceparent`` and
``tracestate`` headers to its work and shadow records, and the workers copy them to every
reply, shadow-result record and dead letter (:func:`trace_headers`), so a producer's trace
continues to whoever reads the result. scoreline adds no span of its own to a request's trace
(a hop that records no span passes ``traceparent`` on unchanged, as W3C trace context says).

With the ``otel`` extra installed (``opentelemetry-api`` and an SDK the operator configures),
every committed batch also gives one span per stage (handle, settle, commit) linked to the
traces of the requests it carried; without it :func:`enabled` is False and nothing is done.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from schemas import headers as H

if TYPE_CHECKING:
    from streams.transport.protocols import Batch

__all__ = ["TRACESTATE", "trace_headers", "trace_id", "enabled", "batch_spans"]

TRACESTATE = "tracestate"
"""W3C vendor trace state, carried alongside ``traceparent``."""

_MAX_LINKS = 32  # a batch span links to at most this many request traces

_otel: Any = None  # the trace API module, when installed
try:  # optional extra: spans only when the operator installed OpenTelemetry
    from opentelemetry import trace as _trace_api
    from opentelemetry.trace import Link, SpanContext, TraceFlags

    _otel = _trace_api
except ImportError:  # pragma: no cover - depends on the environment
    pass


def trace_headers(headers: Mapping[str, str]) -> list[tuple[str, bytes]] | None:
    """The trace-context headers of a consumed record, ready to put on the records it produces."""
    parent = headers.get(H.TRACEPARENT)
    if parent is None:
        return None
    out = [(H.TRACEPARENT, parent.encode())]
    state = headers.get(TRACESTATE)
    if state is not None:
        out.append((TRACESTATE, state.encode()))
    return out


def trace_id(traceparent: str | None) -> str | None:
    """The trace id of a ``traceparent`` value (``00-<trace id>-<span id>-<flags>``), or None if malformed."""
    if not traceparent:
        return None
    parts = traceparent.strip().split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or parts[1] == "0" * 32:
        return None
    try:
        int(parts[1], 16)
    except ValueError:
        return None
    return parts[1].lower()


def enabled() -> bool:
    """Whether OpenTelemetry is installed, so batch spans are recorded."""
    return _otel is not None


def batch_spans(role: str, batch: Batch, began: float, handled: float, settled: float, done: float) -> None:
    """Record one span per batch stage, after the fact, from ``time.perf_counter`` marks."""
    if _otel is None:
        return
    import time

    offset_ns = time.time_ns() - int(time.perf_counter() * 1e9)  # perf_counter marks to epoch nanoseconds
    links = _links(batch)
    tracer = _otel.get_tracer("scoreline")
    size = sum(len(records) for records in batch.values())
    for stage, start, end in (("handle", began, handled), ("settle", handled, settled), ("commit", settled, done)):
        span = tracer.start_span(f"scoreline.{role}.{stage}", start_time=offset_ns + int(start * 1e9), links=links,
                                 attributes={"scoreline.role": role, "messaging.batch.message_count": size})
        span.end(end_time=offset_ns + int(end * 1e9))


def _links(batch: Batch) -> list:
    links = []
    for records in batch.values():
        for record in records:
            for name, value in record.headers or ():
                if name != H.TRACEPARENT:
                    continue
                parts = value.decode("ascii", "replace").split("-")
                if trace_id(value.decode("ascii", "replace")) is None or len(parts[2]) != 16:
                    continue
                try:
                    context = SpanContext(int(parts[1], 16), int(parts[2], 16), is_remote=True,
                                          trace_flags=TraceFlags(int(parts[3][:2], 16)))
                except ValueError:
                    continue
                links.append(Link(context))
                if len(links) >= _MAX_LINKS:
                    return links
    return links
