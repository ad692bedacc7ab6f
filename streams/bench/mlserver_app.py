"""The MLServer peer: Seldon's MLServer (1.7) with its Kafka server on, serving a reference model.

Run as ``python -m streams.bench.mlserver_app BOOTSTRAP PREFIX``: it writes MLServer's two
configuration files into a fresh directory and replaces itself with ``mlserver start DIR``, so the
process the bench started and stops (SIGTERM) is MLServer's own. Only a model-bound run
(``scoreline bench --model``) has it: MLServer serves the model, it does not route. It is a
bench-only dependency (``pip install scoreline[mlserver]``), never something a worker needs.

MLServer's Kafka server (``mlserver/kafka/server.py``) consumes one input topic and produces
each response to one output topic: a V2 inference request per record, the model named by the
``mlserver-model`` header, the record's key taken as the request id and given back as the
response's key. The load generator sends exactly that (``streams.bench.mix``, ``form="v2"``) to
the bench's request topic and reads the responses from its reply topic.

Settings (``settings.json``, then the model's ``model-settings.json``), each with its reason:

- ``kafka_enabled: true``, ``kafka_servers``, ``kafka_topic_input`` / ``kafka_topic_output``:
  the Kafka mode under test, on the bench's broker and topics.
- ``parallel_workers``: the scoring threads scoreline gets on this machine
  (:func:`streams.scoring.default_threads`), so both use the same cores. MLServer's docs advise
  parallel inference (worker processes, each with its own copy of the model) for models that
  hold the GIL or the event loop; its default is one worker.
- ``max_batch_size`` / ``max_batch_time``: adaptive batching, MLServer's dynamic batcher, on as
  its docs advise for throughput: up to the model's best batch size from its ceiling
  (``SCORELINE_BENCH_MLSERVER_BATCH``, default 32), waiting at most 2 ms for it (scoreline's
  batcher adds no wait by default; 2 ms is the shortest MLServer's docs show).
- ``debug: false`` and logging at WARNING: its default ``debug: true`` logs every request.
- ``metrics_endpoint: null``: its Prometheus server is the only part of it nothing here reads;
  REST and gRPC stay on (MLServer always serves them) on ports of their own.
- ``load_models_at_startup: true``: the model is loaded before the first request, as scoreline's
  worker loads it before it takes partitions.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import sys
import tempfile
from pathlib import Path

from streams.bench.layout import CLIENT, bench_layout, bench_model
from streams.scoring import default_threads
from workflows.registry import MODELS_DIR_ENV

__all__ = ["BATCH_ENV", "MODEL_HEADER", "configure"]

BATCH_ENV = "SCORELINE_BENCH_MLSERVER_BATCH"
"Adaptive batching's largest batch (``max_batch_size``); the bench sets it to the model's best batch."

MODEL_HEADER = "mlserver-model"
"The header MLServer's Kafka server reads the model's name from."


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def configure(directory: Path, bootstrap: str, prefix: str, model: str, models_dir: Path) -> None:
    """Write MLServer's ``settings.json`` and the model's ``model-settings.json`` under ``directory``."""
    layout = bench_layout(prefix)
    settings = {"debug": False, "kafka_enabled": True, "kafka_servers": bootstrap,
                "kafka_topic_input": layout.requests, "kafka_topic_output": layout.replies(CLIENT),
                "parallel_workers": default_threads(), "load_models_at_startup": True,
                "host": "127.0.0.1", "http_port": _free_port(), "grpc_port": _free_port(),
                "metrics_endpoint": None, "metrics_dir": str(directory / "metrics"),
                "environments_dir": str(directory / "envs"),
                "logging_settings": {"version": 1, "disable_existing_loggers": False,
                                     "root": {"level": "WARNING"}}}
    (directory / "settings.json").write_text(json.dumps(settings, indent=2))
    model_dir = directory / model
    model_dir.mkdir()
    model_settings = {"name": model, "implementation": "streams.bench.mlserver_runtime.ScorelineRuntime",
                      "max_batch_size": int(os.environ.get(BATCH_ENV, "32")), "max_batch_time": 0.002,
                      "parameters": {"uri": str(models_dir / f"{model}@v1")}}
    (model_dir / "model-settings.json").write_text(json.dumps(model_settings, indent=2))


def main(bootstrap: str, prefix: str) -> None:
    model, models_dir = bench_model(), os.environ.get(MODELS_DIR_ENV)
    if importlib.util.find_spec("mlserver") is None:
        sys.exit("the MLServer peer needs MLServer: pip install 'scoreline[mlserver]'")
    if model is None or not models_dir:
        sys.exit("the MLServer peer serves a reference model: set SCORELINE_BENCH_MODEL and SCORELINE_MODELS_DIR")
    directory = Path(tempfile.mkdtemp(prefix="scoreline-bench-mlserver-"))
    configure(directory, bootstrap, prefix, model, Path(models_dir))
    os.chdir(directory)  # MLServer puts its working files (.metrics, .envs) beside the settings
    os.execv(sys.executable, [sys.executable, "-c", "from mlserver.cli import main; main()", "start", str(directory)])


if __name__ == "__main__":
    main(*sys.argv[1:3])
