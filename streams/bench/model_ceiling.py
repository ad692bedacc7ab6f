"""A model's own ceiling: its workflow in a plain loop, requests decoded and in hand, on the scoring threads.

No server can beat it: the model-bound bench divides each pipeline's sustained throughput by it.
Per batch size (1, 8, 32, 128) one thread's cost a request; then, at the best of those, one loop
per thread, side by side (numpy and ONNX Runtime release the GIL, so they overlap as the worker's
scoring threads do).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from workflows import InMemoryFactStore, sample_items
from workflows.loading import build_model

__all__ = ["BATCHES", "model_ceiling"]

BATCHES = (1, 8, 32, 128)


def model_ceiling(directory: Path, objective: str, threads: int, seconds: float = 2.0) -> dict:
    """``{"per_request_us": {batch: us}, "best_batch", "threads", "ceiling_rps"}`` of the package at ``directory``."""
    model = build_model(directory, InMemoryFactStore())
    items = sample_items(objective, 2048, seed=5)

    def loop(batch: int, offset: int = 0) -> float:
        done, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            start = (offset + done) % (len(items) - batch)
            model.score_batch(items[start:start + batch])
            done += batch
        return done / (time.perf_counter() - began)

    model.score_batch(items[:8])  # warm: the session's first run allocates
    per_request = {batch: round(1e6 / loop(batch), 1) for batch in BATCHES}
    best = min(per_request, key=lambda b: per_request[b])
    with ThreadPoolExecutor(threads) as pool:
        rates = list(pool.map(lambda t: loop(best, t * 97), range(threads)))
    return {"per_request_us": per_request, "best_batch": best, "threads": threads,
            "ceiling_rps": round(sum(rates), 1)}
