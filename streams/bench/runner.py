"""Starts, measures and stops each pipeline in turn, and builds the bench report."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import signal
import sys
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import orjson
from aiokafka.admin import AIOKafkaAdminClient

from streams.bench.layout import CLIENT, PARTITIONS, bench_layout, bench_rules, bench_topics
from streams.bench.loadgen import LoadPlan
from streams.transport.admin import ensure_topics

__all__ = ["BenchPlan", "LAYOUTS", "PIPELINES", "run_bench"]

PIPELINES = ("ceiling", "scoreline", "faust", "faust_take")
"Every pipeline the bench knows, in the order it runs them."

# Per layout and pipeline, the processes to start: a module and its arguments after BOOTSTRAP PREFIX.
_PROCESSES: dict[str, dict[str, list[list[str]]]] = {
    "single": {
        "ceiling": [["streams.bench.relay", "both"]],
        "scoreline": [["streams.bench.scoreline_app", "router,worker"]],
        "faust": [["streams.bench.faust_app", "per-event"]],
        "faust_take": [["streams.bench.faust_app", "take"]],
    },
    "pair": {
        "ceiling": [["streams.bench.relay", "in"], ["streams.bench.relay", "out"]],
        "scoreline": [["streams.bench.scoreline_app", "router"], ["streams.bench.scoreline_app", "worker"]],
        # Faust scales the way its users scale it: a second worker of the same app (the same groups).
        "faust": [["streams.bench.faust_app", "per-event"]] * 2,
        "faust_take": [["streams.bench.faust_app", "take"]] * 2,
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
    pipelines: tuple[str, ...] = PIPELINES
    """Which pipelines to run."""
    layout: str = "pair"
    """A key of :data:`LAYOUTS`: every pipeline as a process pair (the issue's ceiling is one), or in one process."""
    broker_warmup: float = 10.0
    """Seconds of unreported load (the ceiling at saturation) before the first pipeline, so a broker
    that has just started has its JIT warm for every pipeline and not only for the later ones."""
    stop_timeout: float = 20.0
    """Seconds a pipeline process gets to stop before it is killed."""
    extra: dict = field(default_factory=dict)

    @property
    def seconds_per_load(self) -> float:
        return self.latency_duration if self.latency_duration is not None else max(3.0, self.duration / 4)


async def run_bench(bootstrap: str, plan: BenchPlan = BenchPlan(),
                    progress: Callable[[str], None] = lambda _: None) -> dict:
    """Run every pipeline of ``plan`` against ``bootstrap``; return the report (see ``docs/performance.md``)."""
    unknown = set(plan.pipelines) - set(PIPELINES)
    if unknown:
        raise ValueError(f"unknown pipelines {sorted(unknown)}; have {', '.join(PIPELINES)}")
    if plan.layout not in LAYOUTS:
        raise ValueError(f"unknown layout {plan.layout!r}; have {', '.join(LAYOUTS)}")
    run = uuid.uuid4().hex[:8]
    report: dict = {"machine": machine(), "broker": broker_info(bootstrap),
                    "method": {"duration_s": plan.duration, "seconds_per_load": plan.seconds_per_load,
                               "window": plan.window, "rates_rps": list(plan.rates),
                               "partitions": PARTITIONS, "layout": plan.layout,
                               "process_layout": LAYOUTS[plan.layout], "broker_warmup_s": plan.broker_warmup,
                               "request_mix": "alternating title-ranking (20 titles) and fraud-score"}}
    if plan.broker_warmup > 0:
        progress(f"bench: warming the broker up for {plan.broker_warmup:g} s "
                 "(the ceiling at saturation, not reported) ...")
        warm = await _measure("ceiling", bootstrap, uuid.uuid4().hex[:8], replace(plan, duration=plan.broker_warmup),
                              progress)
        if warm.get("throughput_rps") is None:  # the pipelines are still worth measuring; say the broker may be cold
            report["method"]["broker_warmup_error"] = warm.get("error")
    for name in plan.pipelines:
        progress(f"bench: {name} ...")
        report[name] = await _measure(name, bootstrap, run, plan, progress)
        progress(f"bench: {name}: {report[name].get('throughput_rps')} requests/s")
    report["machine"]["loadavg_end"] = _loadavg()
    report["ratios"] = ratios(report)
    return report


def ratios(report: dict) -> dict:
    """``scoreline / ceiling`` and ``scoreline / faust`` (and ``/ faust_take``) in sustained throughput."""
    def rps(name: str) -> float | None:
        return (report.get(name) or {}).get("throughput_rps")

    mine = rps("scoreline")
    out = {}
    for key, other in (("vs_ceiling", "ceiling"), ("vs_faust", "faust"), ("vs_faust_take", "faust_take")):
        theirs = rps(other)
        out[key] = round(mine / theirs, 2) if mine and theirs else None
    return out


async def _measure(name: str, bootstrap: str, run: str, plan: BenchPlan, progress) -> dict:
    prefix = f"bench-{run}-{name.replace('_', '-')}."
    rules = bench_rules(prefix)
    layout = bench_layout(prefix)
    await ensure_topics(bootstrap, bench_topics(prefix, rules))
    log = tempfile.NamedTemporaryFile(prefix=f"scoreline-bench-{name}-", suffix=".log", delete=False)
    processes = [await asyncio.create_subprocess_exec(sys.executable, "-m", module, bootstrap, prefix, *arguments,
                                                      stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log)
                 for module, *arguments in _PROCESSES[plan.layout][name]]
    load = LoadPlan(bootstrap=bootstrap, requests_topic=layout.requests, reply_topic=layout.replies(CLIENT),
                    run=run, duration=plan.duration, latency_duration=plan.seconds_per_load,
                    rates=[] if name == "ceiling" else list(plan.rates), half_max=name != "ceiling",
                    window=plan.window, partitions=PARTITIONS, pipeline_pids=[p.pid for p in processes])
    try:
        result = await _drive(load, processes)
    except Exception as exc:  # noqa: BLE001 - one pipeline failing must not lose the others' figures
        progress(f"bench: {name} failed: {exc}; log in {log.name}")
        result = {"throughput_rps": None, "error": str(exc), "log": log.name}
    finally:
        await asyncio.gather(*(_stop(p, plan.stop_timeout) for p in processes))
        await _delete_topics(bootstrap, prefix)
        log.close()
    if "error" not in result:
        os.unlink(log.name)
    result["prefix"] = prefix
    return result


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
