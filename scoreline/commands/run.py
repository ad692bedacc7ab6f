"""``scoreline run``: the router, workers and shadow workers, in one process or one role per process."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

from schemas import codec
from scoreline import settings
from scoreline.output import progress
from streams.ops.http import DEFAULT_METRICS_PORT, port_free
from streams.services.pipeline import ROLES, Pipeline, PipelineOptions
from workflows.onnx import ONNX_THREADS_ENV


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="run scoreline's services until stopped")
    settings.add_connection_arguments(parser)
    settings.add_config_arguments(parser)
    parser.add_argument("--role", action="append", choices=ROLES,
                        help="run only this role (repeatable); default: every role in this process")
    parser.add_argument("--shard", action="append",
                        help="with --role worker: serve only this shard (repeatable); default: every shard")
    parser.add_argument("--workers-per-shard", type=int, default=1,
                        help="worker instances per shard in this process (default 1)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="scoring threads per process, shared by its workers: workflow calls run there, the "
                             "event loop only moves records (default SCORELINE_SCORING_THREADS, else one per core)")
    parser.add_argument("--onnx-threads", type=int, default=None, metavar="N",
                        help="intra-op threads of each ONNX session (default SCORELINE_ONNX_THREADS, else 1: the "
                             "scoring threads already use every core; more only helps a few large calls)")
    parser.add_argument("--facts", choices=("files", "kafka"), default="files",
                        help="where workers find facts: the fact files (default) or the fact topics, "
                             "each worker reading only the partitions it owns (`scoreline facts publish` first)")
    parser.add_argument("--max-request-bytes", type=int, default=codec.DEFAULT_MAX_REQUEST_BYTES,
                        help="reject larger requests with payload_too_large "
                             f"(default {codec.DEFAULT_MAX_REQUEST_BYTES})")
    parser.add_argument("--untrusted-shared-topic", action="store_true",
                        default=os.environ.get("SCORELINE_TRUST_CLIENT_FIELD", "true").lower() in ("0", "false", "no"),
                        help="reject requests on the shared request topics (untrusted_client): every client must "
                             "publish to its own <prefix>requests.<client> topic, whose ACLs make the topic its "
                             "identity (env SCORELINE_TRUST_CLIENT_FIELD=false)")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="serve /metrics, /healthz and /readyz on this port (default SCORELINE_METRICS_PORT, "
                             f"else {DEFAULT_METRICS_PORT}, skipped with a warning if busy; 0 disables; "
                             "one port per process)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))


def metrics_port(flag: int | None) -> int | None:
    """The port asked for (flag, then ``SCORELINE_METRICS_PORT``), else the default if it is free.

    A port asked for that is busy fails the start; the default one only warns, so that several
    processes on one development machine do not trip over each other (in a container it is free).
    """
    asked = flag if flag is not None else os.environ.get("SCORELINE_METRICS_PORT")
    if asked is not None:
        return int(asked) or None
    if port_free(DEFAULT_METRICS_PORT):
        return DEFAULT_METRICS_PORT
    progress(f"warning: port {DEFAULT_METRICS_PORT} is busy, so this process serves no metrics; "
             "give each process its own --metrics-port")
    return None


async def _run(args: argparse.Namespace) -> int:
    if args.onnx_threads is not None:
        if args.onnx_threads < 1:
            raise settings.ConfigError(f"--onnx-threads must be 1 or more, got {args.onnx_threads}")
        os.environ[ONNX_THREADS_ENV] = str(args.onnx_threads)  # read by each ONNX session as it loads
    rules, registry = settings.load_example_rules(args), settings.model_registry(args)
    kafka = settings.kafka_settings(args)
    options = PipelineOptions(roles=tuple(args.role or ROLES), shards=args.shard,
                              workers_per_shard=args.workers_per_shard, max_request_bytes=args.max_request_bytes,
                              fact_source=args.facts, metrics_port=metrics_port(args.metrics_port),
                              trust_client_field=not args.untrusted_shared_topic,
                              model_cache=settings.model_cache_dir(), scoring_threads=args.threads,
                              side_loop=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Pipeline(kafka, settings.layout(args), rules, registry, options) as pipeline:
        await pipeline.wait_ready()
        progress(f"scoreline running on {kafka.bootstrap}: roles {', '.join(options.roles)}, "
                 f"rules version {pipeline.rules.version}; Ctrl-C stops")
        while not stop.is_set():
            failed = next((s for s in pipeline.services if s.failed), None)
            if failed is not None:
                raise failed.failed  # type: ignore[misc]
            try:
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            except TimeoutError:
                pass
        progress("stopping: finishing the batches in hand ...")
    return 0
