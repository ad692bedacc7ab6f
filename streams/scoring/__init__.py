"""Model compute off the event loop: the scoring threads a worker hands its workflow calls to.

This room imports no Kafka client: the event loop moves records (``streams.services``), the
threads here run workflows, whose runtimes (numpy, ONNX Runtime) release the GIL while they compute.
"""

from streams.scoring.executor import DEFAULT_THREADS, ScoringExecutor, default_threads

__all__ = ["DEFAULT_THREADS", "ScoringExecutor", "default_threads"]
