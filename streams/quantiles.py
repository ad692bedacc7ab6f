"""Quantiles of Prometheus histograms: from cumulative bucket counts, as Prometheus' ``histogram_quantile`` does.

Below every sub-package: ``scoreline top`` reads latency from scrapes with it, and a backfill
watches live latency with it (:mod:`streams.client.governor`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["bucket_quantile"]


def bucket_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The ``q`` quantile from cumulative bucket counts ``{upper bound: count}`` (Prometheus' interpolation)."""
    bounds = sorted(buckets)
    if not bounds:
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower  # in the overflow bucket: the best one can say is "over the last bound"
            in_bucket = count - below
            return lower + (bound - lower) * ((rank - below) / in_bucket if in_bucket else 1.0)
        lower, below = bound, count
    return lower
