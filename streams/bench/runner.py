"""Starts, measures and stops each pipeline in turn, and builds the bench report."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import platform
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams.bench.layout import BENCH_MODEL_ENV, CLIENT, PARTITIONS, bench_layout, bench_rules, bench_topics
from streams.bench.loadgen import LoadPlan, percentiles
from streams.bench.mlserver_app import BATCH_ENV
from streams.bench.model_ceiling import model_ceiling
from streams.topics import TopicSpec
from streams.transport.admin import ensure_topics
from workflows.registry import MODELS_DIR_ENV

__all__ = ["BenchPlan", "LAYOUTS", "LOAD_SHARES", "PIPELINES", "ROUTING_PIPELINES", "model_ratios", "run_bench"]

PIPELINES = ("ceiling", "scoreline", "scoreline_run", "quix", "faust", "faust_take", "mlserver")
"""Every pipeline the bench knows, in the order it runs them (``mlserver`` serves a reference model only:
it has no router, so it runs in a model-bound run alone). ``scoreline_run`` is the path users run:
``scoreline run`` with every role and the shipped rules (shadowing on), its latency measured
through :class:`~streams.client.ScoreClient` (``streams.bench.client_load``)."""

CLIENT_DRIVEN = ("scoreline_run",)
"Pipelines whose unloaded and fixed-rate requests go through ``ScoreClient`` rather than the raw sender."

ROUTING_PIPELINES = tuple(p for p in PIPELINES if p != "mlserver")
"What the bench runs by default: every pipeline that routes and scores the example objectives."

# Per layout and pipeline, the processes to start: a module and its arguments after BOOTSTRAP PREFIX.
_PROCESSES: dict[str, dict[str, list[list[str]]]] = {
    "single": {
        "ceiling": [["streams.bench.relay", "both"]],
        "scoreline": [["streams.bench.scoreline_app", "router,worker"]],
        "scoreline_run": [["streams.bench.scoreline_app", "run"]],
        "quix": [["streams.bench.quix_app", "both"]],
        "faust": [["streams.bench.faust_app", "per-event"]],
        "faust_take": [["streams.bench.faust_app", "take"]],
        "mlserver": [["streams.bench.mlserver_app"]],
    },
    "pair": {
        "ceiling": [["streams.bench.relay", "in"], ["streams.bench.relay", "out"]],
        "scoreline": [["streams.bench.scoreline_app", "router"], ["streams.bench.scoreline_app", "worker"]],
        # What users run in either layout: `scoreline run`, every role in the one process it starts.
        "scoreline_run": [["streams.bench.scoreline_app", "run"]],
        "quix": [["streams.bench.quix_app", "route"], ["streams.bench.quix_app", "score"]],
        # Faust scales the way its users scale it: a second worker of the same app (the same groups).
        "faust": [["streams.bench.faust_app", "per-event"]] * 2,
        "faust_take": [["streams.bench.faust_app", "take"]] * 2,
        # One MLServer, as its users run it: its parallel inference workers are its own child processes.
        "mlserver": [["streams.bench.mlserver_app"]],
    },
}

LAYOUTS = {
    "single": "each pipeline runs alone in one child process holding all of its stages (both relay hops; router "
              "and workers; both faust agents); the load generator runs in another child process; the bench "
              "process only orchestrates",
    "pair": "each pipeline runs as two child processes: the relay's two hops one per process; scoreline's router "
            "in one and its workers in the other (scoreline run --role); two workers of the faust app (faust "
            "splits both agents' partitions between them); the load generator runs in another child process",
}
"""How the pipelines are laid out in processes (``--layout``); every pipeline of one run gets the same."""


@dataclass(frozen=True)
class BenchPlan:
    """How long and how hard the bench drives each pipeline."""

    duration: float = 20.0
    """Seconds of saturation per pipeline (throughput)."""
    latency_duration: float | None = None
    """Seconds per fixed offered load; default a quarter of ``duration``, at least 3."""
    rates: tuple[float, ...] = (500.0, 2000.0)
    """Fixed offered loads (requests/s) for the latency figures; half of the maximum is added."""
    window: int = 3000
    """Requests kept in flight during saturation."""
    pipelines: tuple[str, ...] = ROUTING_PIPELINES
    """Which pipelines to run."""
    layout: str = "pair"
    """A key of :data:`LAYOUTS`: every pipeline as a process pair (the issue's ceiling is one), or in one process."""
    broker_warmup: float = 10.0
    """Seconds of unreported load (the ceiling at saturation) before the first pipeline, so a broker
    that has just started has its JIT warm for every pipeline and not only for the later ones."""
    rounds: int = 3
    """Interleaved rounds of saturation: each a ``duration / rounds`` saturation of every pipeline in turn."""
    unloaded: int = 300
    """Sequential single requests per pipeline for its unloaded latency (and of the raw hop)."""
    stop_timeout: float = 20.0
    """Seconds a pipeline process gets to stop before it is killed."""
    model: str | None = None
    """A model-bound run: the reference objective every pipeline serves (its requests the mix), measured
    beside the model's own ceiling; the offered loads are then 25, 50 and 75 % of that ceiling."""
    models_dir: str | None = None
    """With ``model``: the directory holding the reference packages (``scoreline models reference``)."""
    half_max: bool = True
    """Whether to add half of each pipeline's maximum to the offered loads."""
    extra: dict = field(default_factory=dict)

    @property
    def seconds_per_load(self) -> float:
        return self.latency_duration if self.latency_duration is not None else max(3.0, self.duration / 4)


async def run_bench(bootstrap: str, plan: BenchPlan = BenchPlan(),
                    progress: Callable[[str], None] = lambda _: None) -> dict:
    """Run every pipeline of ``plan`` against ``bootstrap``; return the report (see ``docs/performance.md``).

    Every pipeline is started once and runs for the whole bench, idle while another is driven.
    Throughput is measured in ``plan.rounds`` interleaved rounds, each a short saturation of every
    pipeline in turn, so a slow spell of the machine hits all of them; then each pipeline's
    latency: unloaded (one request at a time), then at each fixed offered load.
    """
    unknown = set(plan.pipelines) - set(PIPELINES)
    if unknown:
        raise ValueError(f"unknown pipelines {sorted(unknown)}; have {', '.join(PIPELINES)}")
    if "mlserver" in plan.pipelines and plan.model is None:
        raise ValueError("mlserver serves a reference model and routes nothing: run it with --model")
    if plan.layout not in LAYOUTS:
        raise ValueError(f"unknown layout {plan.layout!r}; have {', '.join(LAYOUTS)}")
    run = uuid.uuid4().hex[:8]
    report: dict = {"machine": machine(), "broker": broker_info(bootstrap),
                    "method": {"duration_s": plan.duration, "rounds": plan.rounds,
                               "seconds_per_round": round(plan.duration / plan.rounds, 2),
                               "seconds_per_load": plan.seconds_per_load, "unloaded_requests": plan.unloaded,
                               "window": plan.window, "rates_rps": list(plan.rates),
                               "partitions": PARTITIONS, "layout": plan.layout,
                               "process_layout": LAYOUTS[plan.layout], "broker_warmup_s": plan.broker_warmup,
                               "request_mix": "alternating title-ranking (20 titles) and fraud-score"}}
    names = list(plan.pipelines)
    started: dict[str, _Running] = {}
    if plan.model is not None:
        plan = await _model_bound(plan, report, progress)
    try:
        progress(f"bench: starting {', '.join(names)} ...")
        for name in names:
            started[name] = await _start(name, bootstrap, run, plan)
        if plan.broker_warmup > 0 and "ceiling" in started:
            progress(f"bench: warming the broker up for {plan.broker_warmup:g} s "
                     "(the ceiling at saturation, not reported) ...")
            warm = await _phase(started["ceiling"], plan, ["saturate"], duration=plan.broker_warmup)
            if warm.get("throughput_rps") is None:  # the pipelines are still worth measuring; say it may be cold
                report["method"]["broker_warmup_error"] = warm.get("error")
        rounds: list[dict[str, dict]] = []
        for number in range(1, plan.rounds + 1):
            results = {}
            for name in names:
                results[name] = await _phase(started[name], plan, ["saturate"],
                                             duration=plan.duration / plan.rounds)
                progress(f"bench: round {number}/{plan.rounds}: {name}: "
                         f"{results[name].get('throughput_rps')} requests/s")
            rounds.append(results)
        for name in names:
            report[name] = _median_round([r[name] for r in rounds])
            report[name]["rounds_rps"] = [r[name].get("throughput_rps") for r in rounds]
            if report[name].get("throughput_rps") is None:
                continue
            phases = ["unloaded", "offered"]  # the ceiling's too: the floor under load, beside the pipelines
            progress(f"bench: {name}: latency ...")
            latency = await _phase(started[name], plan, phases, max_rps=report[name]["throughput_rps"])
            for key in ("unloaded_ms", "latency_ms", "error", "log"):
                if key in latency:
                    report[name][key] = latency[key]
            report[name]["prefix"] = started[name].prefix
        report["raw_hop_ms"] = await raw_hop(bootstrap, f"bench-{run}-hop", plan.unloaded)
    finally:
        await asyncio.gather(*(_stop_pipeline(r, plan.stop_timeout) for r in started.values()))
    report["machine"]["loadavg_end"] = _loadavg()
    report["rounds"] = [ratios(r) for r in rounds] if started else []
    report["ratios"] = ratios(report)
    report["ratios"].update(_spreads(report["rounds"]))
    if plan.model is not None:
        report["ratios"]["model"] = {plan.model: model_ratios(report)}
    return report


LOAD_SHARES = (0.25, 0.5, 0.75)
"The offered loads of a model-bound run, as shares of the model's ceiling."


async def _model_bound(plan: BenchPlan, report: dict, progress: Callable[[str], None]) -> BenchPlan:
    """Measure the model's ceiling (on a quiet machine: before any pipeline starts); the plan with its loads."""
    model = plan.model
    if model is None or plan.models_dir is None:
        raise ValueError("a model-bound bench needs a model and the reference models' directory (models_dir)")
    from streams.scoring import default_threads

    threads = default_threads()
    progress(f"bench: {plan.model}: the model's own ceiling on {threads} thread(s) ...")
    seconds = max(0.5, min(2.0, plan.duration / 10))  # per batch size, and for the threads side by side
    ceiling = await asyncio.to_thread(model_ceiling, Path(plan.models_dir) / f"{model}@v1", model, threads, seconds)
    loads = tuple(round(share * ceiling["ceiling_rps"]) for share in LOAD_SHARES)
    report["model"] = {"name": plan.model, "ceiling": ceiling,
                       "loads_rps": dict(zip((f"{int(100 * s)}pct" for s in LOAD_SHARES), loads))}
    report["method"].update(request_mix=f"{plan.model} requests (workflows.training.reference.reference_items)",
                            rates_rps=list(loads), broker_warmup_s=0.0)
    progress(f"bench: {plan.model}: ceiling {ceiling['ceiling_rps']} requests/s at batch {ceiling['best_batch']}")
    return dataclasses.replace(plan, rates=loads, half_max=False, broker_warmup=0.0,
                               extra={**plan.extra, "best_batch": ceiling["best_batch"]})


def model_ratios(report: dict) -> dict:
    """A model-bound run's ratios: scoreline over the model's ceiling and over each peer, and its p99 at half
    the ceiling's rate over its own unloaded p99 (None where a figure is missing: a pipeline not run or failed)."""
    ceiling = ((report.get("model") or {}).get("ceiling") or {}).get("ceiling_rps")
    mine = (report.get("scoreline") or {}).get("throughput_rps")
    quix = (report.get("quix") or {}).get("throughput_rps")
    mlserver = (report.get("mlserver") or {}).get("throughput_rps")
    half = str(int((report.get("model") or {}).get("loads_rps", {}).get("50pct", -1)))
    loaded = (((report.get("scoreline") or {}).get("latency_ms") or {}).get(half) or {}).get("p99")
    unloaded = ((report.get("scoreline") or {}).get("unloaded_ms") or {}).get("p99")
    return {"vs_model_ceiling": round(mine / ceiling, 3) if mine and ceiling else None,
            "vs_mlserver": round(mine / mlserver, 2) if mine and mlserver else None,
            "vs_quix": round(mine / quix, 2) if mine and quix else None,
            "p99_at_50pct_vs_unloaded": round(loaded / unloaded, 2) if loaded and unloaded else None}


def ratios(report: dict) -> dict:
    """Scoreline over each peer in sustained throughput; over the ceiling (the floor) in unloaded latency."""
    def figure(name: str, *path: str) -> float | None:
        value: object = report.get(name) or {}
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return value if isinstance(value, (int, float)) else None

    mine = figure("scoreline", "throughput_rps")
    out: dict[str, float | None] = {}
    for key, other in (("vs_ceiling", "ceiling"), ("vs_quix", "quix"), ("vs_faust", "faust"),
                       ("vs_faust_take", "faust_take")):
        theirs = figure(other, "throughput_rps")
        out[key] = round(mine / theirs, 2) if mine and theirs else None
    for percentile in ("p50", "p99"):
        mine_ms, floor_ms = figure("scoreline", "unloaded_ms", percentile), figure("ceiling", "unloaded_ms", percentile)
        if mine_ms is not None and floor_ms:
            out[f"unloaded_{percentile}_vs_ceiling"] = round(mine_ms / floor_ms, 2)
    loaded, unloaded = figure("scoreline", "latency_ms", "500", "p99"), figure("scoreline", "unloaded_ms", "p99")
    if loaded is not None and unloaded:
        out["p99_at_500_vs_unloaded"] = round(loaded / unloaded, 2)
        floor_loaded, floor_unloaded = figure("ceiling", "latency_ms", "500", "p99"), figure("ceiling", "unloaded_ms",
                                                                                             "p99")
        if floor_loaded is not None and floor_unloaded:
            out["ceiling_p99_at_500_vs_unloaded"] = round(floor_loaded / floor_unloaded, 2)
    # The path users run (ScoreClient -> `scoreline run`, every role) against the same floor.
    run, ceiling = figure("scoreline_run", "throughput_rps"), figure("ceiling", "throughput_rps")
    if run and ceiling:
        out["run_vs_ceiling"] = round(run / ceiling, 2)
    for percentile in ("p50", "p99"):
        mine_ms, floor_ms = figure("scoreline_run", "unloaded_ms", percentile), figure("ceiling", "unloaded_ms",
                                                                                       percentile)
        if mine_ms is not None and floor_ms:
            out[f"run_unloaded_{percentile}_vs_ceiling"] = round(mine_ms / floor_ms, 2)
    loaded, unloaded = figure("scoreline_run", "latency_ms", "500", "p99"), figure("scoreline_run", "unloaded_ms",
                                                                                  "p99")
    if loaded is not None and unloaded:
        out["run_p99_at_500_vs_unloaded"] = round(loaded / unloaded, 2)
    return out


def _spreads(rounds: list[dict]) -> dict:
    """The min, median and max of each throughput ratio over the rounds."""
    out = {}
    for key in ("vs_ceiling", "vs_quix", "vs_faust", "vs_faust_take"):
        values = sorted(r[key] for r in rounds if r.get(key) is not None)
        if values:
            out[f"{key}_rounds"] = {"min": values[0], "median": values[len(values) // 2], "max": values[-1]}
    return out


def _median_round(results: list[dict]) -> dict:
    """The round whose throughput is the median (a failed round counts as none)."""
    measured = sorted((r for r in results if r.get("throughput_rps") is not None), key=lambda r: r["throughput_rps"])
    if not measured:
        return dict(results[-1]) if results else {"throughput_rps": None}
    return dict(measured[len(measured) // 2])


@dataclass
class _Running:
    name: str
    bootstrap: str
    prefix: str
    processes: list[asyncio.subprocess.Process]
    log: Any
    requests_topic: str
    reply_topic: str
    run: str
    failed: bool = False


async def _start(name: str, bootstrap: str, run: str, plan: BenchPlan) -> _Running:
    prefix = f"bench-{run}-{name.replace('_', '-')}."
    rules = bench_rules(prefix, plan.model)
    layout = bench_layout(prefix)
    await ensure_topics(bootstrap, bench_topics(prefix, rules))
    log = tempfile.NamedTemporaryFile(prefix=f"scoreline-bench-{name}-", suffix=".log", delete=False)
    env = None if plan.model is None else {**os.environ, BENCH_MODEL_ENV: plan.model,
                                           MODELS_DIR_ENV: str(plan.models_dir),
                                           BATCH_ENV: str(plan.extra.get("best_batch", 32))}
    processes = [await asyncio.create_subprocess_exec(sys.executable, "-m", module, bootstrap, prefix, *arguments,
                                                      stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
                                                      env=env)
                 for module, *arguments in _PROCESSES[plan.layout][name]]
    return _Running(name, bootstrap, prefix, processes, log, layout.requests, layout.replies(CLIENT), run)


async def _phase(running: _Running, plan: BenchPlan, phases: list[str], *, duration: float | None = None,
                 max_rps: float | None = None) -> dict:
    """One load generator run against a started pipeline; a failure is reported, not raised."""
    if running.failed:
        return {"throughput_rps": None, "error": "failed in an earlier phase", "log": running.log.name}
    load = LoadPlan(bootstrap=running.bootstrap,
                    requests_topic=running.requests_topic, reply_topic=running.reply_topic, run=running.run,
                    duration=duration or plan.duration, latency_duration=plan.seconds_per_load,
                    rates=list(plan.rates), half_max=plan.half_max, window=plan.window, partitions=PARTITIONS,
                    pipeline_pids=[p.pid for p in running.processes], phases=phases, unloaded=plan.unloaded,
                    max_rps=max_rps, objectives=[plan.model] if plan.model else ["title-ranking", "fraud-score"],
                    form="v2" if running.name == "mlserver" else "scoreline",
                    driver="client" if running.name in CLIENT_DRIVEN else "raw", prefix=running.prefix)
    try:
        return await _drive(load, running.processes)
    except Exception as exc:  # noqa: BLE001 - one pipeline failing must not lose the others' figures
        running.failed = True
        return {"throughput_rps": None, "error": str(exc), "log": running.log.name}


async def _stop_pipeline(running: _Running, timeout: float) -> None:
    await asyncio.gather(*(_stop(p, timeout) for p in running.processes))
    await _delete_topics(running.bootstrap, running.prefix)
    running.log.close()
    if not running.failed:
        os.unlink(running.log.name)


async def raw_hop(bootstrap: str, topic: str, count: int) -> dict:
    """One Kafka hop and back to the same process, a record at a time: what a hop costs with no work at all."""
    await ensure_topics(bootstrap, [TopicSpec(topic, 1)])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                fetch_max_wait_ms=5)
    await producer.start()
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        await consumer.position(tp)
        seconds = []
        for i in range(count):
            began = time.perf_counter()
            await producer.send_and_wait(topic, b"x" * 600, key=str(i).encode(), partition=0)
            while True:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                if any(r.key == str(i).encode() for r in batch.get(tp, [])):
                    break
            seconds.append(time.perf_counter() - began)
    finally:
        await consumer.stop()
        await producer.stop()
        await _delete_topics(bootstrap, topic)
    return {"requests": count, **percentiles(seconds)}


async def _drive(load: LoadPlan, pipeline: list[asyncio.subprocess.Process]) -> dict:
    loads = len(load.rates) + int(load.half_max)
    budget = load.warmup_timeout + load.duration + load.drain_timeout + loads * (load.latency_duration
                                                                                 + load.drain_timeout) + 30
    generator = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streams.bench.loadgen", orjson.dumps(load.__dict__).decode(),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE)
    communicate = asyncio.ensure_future(generator.communicate())
    died = asyncio.ensure_future(asyncio.wait([asyncio.ensure_future(p.wait()) for p in pipeline],
                                              return_when=asyncio.FIRST_COMPLETED))
    done, _ = await asyncio.wait({communicate, died}, timeout=budget, return_when=asyncio.FIRST_COMPLETED)
    if communicate not in done:
        with contextlib.suppress(ProcessLookupError):
            generator.kill()
        await generator.wait()
        raise RuntimeError("a pipeline process exited" if died in done else f"no report within {budget:.0f}s")
    died.cancel()
    stdout, _ = communicate.result()
    if generator.returncode != 0:
        raise RuntimeError(f"load generator exited with {generator.returncode}")
    return orjson.loads(stdout.splitlines()[-1])


async def _stop(process: asyncio.subprocess.Process, timeout: float) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


async def _delete_topics(bootstrap: str, prefix: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if topics:
            await admin.delete_topics(topics)
    finally:
        await admin.close()


def machine() -> dict:
    """What the figures were measured on."""
    import aiokafka
    import faust
    import numpy
    import orjson as _orjson

    return {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "numpy": numpy.__version__, "aiokafka": aiokafka.__version__, "faust": faust.__version__,
            "orjson": _orjson.__version__, "loadavg_start": _loadavg()}


def broker_info(bootstrap: str) -> dict:
    """The broker's version when it is the local one scoreline runs (else unknown: Kafka does not say)."""
    from streams.broker.local import LocalBroker

    status = LocalBroker().status()
    version = status.version if status.running and status.bootstrap == bootstrap else None
    return {"bootstrap": bootstrap, "version": version}


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
