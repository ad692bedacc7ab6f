"""Operating a pipeline: Prometheus metrics, health and readiness, the HTTP port that serves them, and trace context."""

from streams.ops.health import Probe
from streams.ops.http import DEFAULT_METRICS_PORT, MetricsServer, port_free
from streams.ops.metrics import PipelineMetrics, ServiceMetrics
from streams.ops.tracing import trace_headers, trace_id

__all__ = ["DEFAULT_METRICS_PORT", "MetricsServer", "PipelineMetrics", "Probe", "ServiceMetrics", "port_free",
           "trace_headers", "trace_id"]
