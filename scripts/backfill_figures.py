"""The figures of docs/clients.md, "A million rows, measured": a Parquet backfill, live latency beside one, an export.

    .venv/bin/python scripts/backfill_figures.py [--rows 1000000] [--mix-rows 300000] [--live-rows 200000]
        [--comparisons 1000000] [--bench-duration 10] [--only bench,live,backfill,export]
        [--bootstrap HOST:PORT] [--json]

Needs ``pip install 'scoreline[data,bench]'``. Against the local broker (started if none runs) or
``--bootstrap``, under a topic prefix of its own, in four parts (``--only`` picks some):

1. ``bench``: ``scoreline bench --only ceiling,scoreline_run``, what the pipeline users run
   sustains (the reference for the backfill's throughput);
2. ``live``, on ``scoreline run`` (every role, shadowing on): 100 live requests a second through
   ``ScoreClient`` for ``--live-seconds`` alone, then beside an unthrottled backfill of
   ``--live-rows`` rows, governed (the default) and ``--no-govern``: live p50/p99 each way;
3. ``backfill``, on the same ``scoreline run``: a ``--rows`` title-ranking Parquet file
   backfilled with ``scoreline backfill --out results.parquet`` (seconds, rows a second, the
   backfill process's peak RSS, every row accounted for: results = rows, no duplicates), a
   ``--resume`` of it (which must publish nothing), and a ``--mix-rows`` fraud-score backfill,
   so that the bench's mix (half of each) has a backfill rate to set beside the bench's;
4. ``export``: ``scoreline shadow export`` of ``--comparisons`` comparisons on a topic of their
   own: a tenth of them first, then (once the rest are published) an incremental export of the
   other nine tenths, then a re-run, which must write nothing: seconds, peak RSS and rows
   written each time, and the rows the export holds at the end (DuckDB).

Prints one JSON object with ``--json`` (progress on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]

import numpy as np  # noqa: E402
import orjson  # noqa: E402

from schemas import codec  # noqa: E402
from schemas.messages import Comparison  # noqa: E402
from streams.bench.client_load import percentiles  # noqa: E402
from streams.client.score_client import ScoreClient  # noqa: E402
from streams.topics import TopicLayout, TopicSpec  # noqa: E402
from streams.transport.admin import ensure_topics  # noqa: E402
from streams.transport.kafka import aiokafka_producer  # noqa: E402
from streams.transport.settings import KafkaSettings  # noqa: E402
from workflows import sample_items  # noqa: E402

SCORELINE = [sys.executable, "-m", "scoreline"]
LIVE_RPS = 100.0


def say(text: str) -> None:
    print(f"backfill_figures: {text}", file=sys.stderr, flush=True)


PAYLOAD_COLS = {"title-ranking": "titles", "fraud-score": "amount,currency,merchant_category,card_present"}


def write_requests(path: Path, rows: int, seed: int = 7, objective: str = "title-ranking") -> None:
    """``rows`` requests as a flat Parquet table: context columns, then a list of 20 titles
    (title-ranking) or a payment's four columns (fraud-score)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    rng = np.random.default_rng(seed)
    chunk = 100_000
    payload = ([("titles", pa.list_(pa.string()))] if objective == "title-ranking" else
               [("amount", pa.float64()), ("currency", pa.string()), ("merchant_category", pa.string()),
                ("card_present", pa.bool_())])
    schema = pa.schema([("user_id", pa.string()), ("country", pa.string()), ("device", pa.string()),
                        ("surface", pa.string()), *payload])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            columns = {
                "user_id": pa.array([f"u-{k}" for k in rng.integers(0, 100_000, n)]),
                "country": pa.array(rng.choice(["US", "GB", "DE", "BR", "IN"], n)),
                "device": pa.array(rng.choice(["tv", "mobile", "web"], n)),
            }
            if objective == "title-ranking":
                titles = pa.array([f"t-{k}" for k in rng.integers(0, 400, n * 20)], pa.string())
                columns["surface"] = pa.array(rng.choice(["home", "search"], n))
                columns["titles"] = pa.ListArray.from_arrays(
                    pa.array(np.arange(0, n * 20 + 1, 20, dtype=np.int32)), titles)
            else:
                columns["surface"] = pa.array(rng.choice(["checkout", "wallet"], n))
                columns["amount"] = pa.array(np.round(rng.gamma(2.0, 40.0, n), 2))
                columns["currency"] = pa.array(rng.choice(["USD", "GBP", "EUR"], n))
                columns["merchant_category"] = pa.array(rng.choice(["grocery", "travel", "electronics"], n))
                columns["card_present"] = pa.array(rng.random(n) < 0.5)
            writer.write_table(pa.table(columns, schema=schema))


def peak_rss_mb(process: subprocess.Popen, poll: float = 0.25) -> tuple[float, int]:
    """Wait for ``process``; its peak resident memory (VmHWM) in MB, and its return code."""
    peak = 0
    while process.poll() is None:
        try:
            for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except FileNotFoundError:
            break
        time.sleep(poll)
    return round(peak / 1024, 1), process.wait()


def scoreline(*args: str, env: dict[str, str], stdout: Any = subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen([*SCORELINE, *args], env=env, stdout=stdout, stderr=sys.stderr)


def run_backfill(source: Path, out: Path, env: dict[str, str], *extra: str,
                 objective: str = "title-ranking") -> dict[str, Any]:
    process = scoreline("backfill", str(source), "--objective", objective, "--context-cols",
                        "user_id,country,device,surface", "--payload-cols", PAYLOAD_COLS[objective], "--out", str(out),
                        "--json", "--idle-timeout", "120", *extra, env=env)
    began = time.monotonic()
    peak, code = peak_rss_mb(process)
    assert process.stdout is not None
    summary = orjson.loads(process.stdout.read())
    return {"summary": summary, "rss_peak_mb": peak, "exit": code, "wall_s": round(time.monotonic() - began, 1)}


def accounted(out: Path, rows: int) -> dict[str, Any]:
    import pyarrow.parquet as pq
    column = pq.read_table(out, columns=["row", "status"])
    numbers = np.asarray(column.column("row").to_numpy())
    unique = np.unique(numbers)
    statuses = column.column("status").value_counts().to_pylist()
    return {"results": int(len(numbers)), "distinct_rows": int(len(unique)),
            "duplicates": int(len(numbers) - len(unique)), "missing": int(rows - len(unique)),
            "statuses": {s["values"]: s["counts"] for s in statuses}}


async def live_latency(bootstrap: str, prefix: str, seconds: float) -> dict[str, Any]:
    """``LIVE_RPS`` title-ranking requests a second through ``ScoreClient`` for ``seconds``; p50/p99."""
    items = sample_items("title-ranking", 2000, seed=9)
    async with ScoreClient(KafkaSettings(bootstrap), "demo", layout=TopicLayout(prefix=prefix)) as client:
        for item in items[:20]:  # warm up
            await client.score("title-ranking", item.context, item.payload, timeout=30)

        async def one(i: int) -> float | None:
            item = items[i % len(items)]
            began = time.perf_counter()
            try:
                await client.score("title-ranking", item.context, item.payload, timeout=30)
            except Exception:  # noqa: BLE001 - a timeout counts as unanswered
                return None
            return time.perf_counter() - began
        tasks = []
        began = time.perf_counter()
        i = 0
        while time.perf_counter() - began < seconds:
            tasks.append(asyncio.create_task(one(i)))
            i += 1
            await asyncio.sleep(max(0.0, began + i / LIVE_RPS - time.perf_counter()))
        results = await asyncio.gather(*tasks)
    answered = [r for r in results if r is not None]
    return {"sent": len(results), "unanswered": len(results) - len(answered), **percentiles(answered)}


def wait_ready(metrics: str, timeout: float = 120.0) -> None:
    """Until ``scoreline run`` answers ``/readyz`` with 200 (every role has partitions, models loaded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{metrics}/readyz", timeout=5) as response:  # noqa: S310
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"scoreline run was not ready within {timeout:g}s")


def wait_for_side_roles(metrics: str, timeout: float = 600.0) -> None:
    """Until the shadow worker and the comparator have no lag left (the backfill's shadow copies are done)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5) as response:  # noqa: S310
            text = response.read().decode()
        lag = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith("scoreline_consumer_lag_records{"))
        if lag == 0:
            return
        time.sleep(1.0)
    say("the side roles still lag; going on")


def comparisons(n: int) -> list[bytes]:
    base = int(time.time() * 1000) - 3_600_000
    out = []
    for i in range(n):
        overlap = (i % 5) / 4
        out.append(codec.encode(Comparison(
            f"c-{i}", "title-ranking", "title-ranking@v1", "title-ranking@v2", True, None, 1, None, "ok", "ok",
            2.0, 3.0, {"kind": "ranking", "top_k_overlap": overlap, "top1_agrees": overlap == 1.0},
            "live", {"country": ("US", "GB", "DE")[i % 3], "device": ("tv", "web")[i % 2]}, base + i)))
    return out


async def publish(bootstrap: str, topic: str, values: list[bytes], offset: int = 0) -> None:
    producer = aiokafka_producer(KafkaSettings(bootstrap), "figures")
    await producer.start()
    try:
        for i, value in enumerate(values, start=offset):
            await producer.send(topic, value, key=str(i).encode())
        await producer.flush()
    finally:
        await producer.stop()


def exported_rows(to: Path) -> int:
    import duckdb
    return int(duckdb.sql(f"SELECT count(*) FROM read_parquet('{to}/**/*.parquet', hive_partitioning = true)")
               .fetchall()[0][0])


def export(to: Path, env: dict[str, str]) -> dict[str, Any]:
    process = scoreline("shadow", "export", "--to", str(to), "--json", env=env)
    began = time.monotonic()
    peak, code = peak_rss_mb(process)
    assert process.stdout is not None
    return {"summary": orjson.loads(process.stdout.read()), "rss_peak_mb": peak, "exit": code,
            "wall_s": round(time.monotonic() - began, 1)}


PARTS = ("bench", "live", "backfill", "export")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default=os.environ.get("SCORELINE_BOOTSTRAP"))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--mix-rows", type=int, default=300_000)
    parser.add_argument("--live-rows", type=int, default=200_000)
    parser.add_argument("--live-seconds", type=float, default=30.0)
    parser.add_argument("--comparisons", type=int, default=1_000_000)
    parser.add_argument("--bench-duration", type=float, default=10.0)
    parser.add_argument("--only", default=",".join(PARTS), help=f"parts to run, of {','.join(PARTS)}")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    if not parts <= set(PARTS):
        parser.error(f"--only takes {','.join(PARTS)}")
    bootstrap = args.bootstrap
    if bootstrap is None:
        subprocess.run([*SCORELINE, "broker", "start"], check=True, stdout=subprocess.DEVNULL)
        bootstrap = "127.0.0.1:9092"
    prefix = f"bf{uuid.uuid4().hex[:6]}."
    env = {**os.environ, "SCORELINE_BOOTSTRAP": bootstrap, "SCORELINE_TOPIC_PREFIX": prefix}
    report: dict[str, Any] = {"rows": args.rows, "prefix": prefix}
    work = Path(tempfile.mkdtemp(prefix="scoreline-figures-"))
    if "bench" in parts:
        say("bench: scoreline_run beside the ceiling")
        bench = subprocess.run([*SCORELINE, "bench", "--only", "ceiling,scoreline_run", "--duration",
                                str(args.bench_duration), "--json"],
                               env={**os.environ, "SCORELINE_BOOTSTRAP": bootstrap},
                               check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        figures = orjson.loads(bench.stdout)
        pipelines = figures.get("pipelines", figures)
        report["bench_scoreline_run_rps"] = pipelines["scoreline_run"]["throughput_rps"]
    if parts & {"live", "backfill"}:
        with running_pipeline(work, prefix, env) as (metrics, run_env):
            if "live" in parts:
                live_beside_backfills(report, args, work, bootstrap, prefix, metrics, run_env)
            if "backfill" in parts:
                big_backfill(report, args, work, metrics, run_env)
    if "export" in parts:
        report["export"] = export_runs(args.comparisons, work, bootstrap, env)
    if args.json:
        print(orjson.dumps(report).decode())
    else:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    return 0


@contextlib.contextmanager
def running_pipeline(work: Path, prefix: str, env: dict[str, str]) -> Iterator[tuple[str, dict[str, str]]]:
    """``scoreline run`` (every role, the shipped rules under ``prefix``) on a free metrics port, ready."""
    rules = work / "rules.json"
    rules.write_text((Path(__file__).resolve().parent.parent / "scoreline" / "examples" / "rules.json").read_text()
                     .replace('"scoreline.replies.', f'"{prefix}replies.'))
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        metrics = f"127.0.0.1:{free.getsockname()[1]}"
    run = subprocess.Popen([*SCORELINE, "run", "--rules", str(rules), "--metrics-port", metrics.split(":")[1]],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(metrics)
        yield metrics, {**env, "SCORELINE_RULES": str(rules)}
    finally:
        run.terminate()
        run.wait(timeout=60)


def live_beside_backfills(report: dict[str, Any], args: argparse.Namespace, work: Path, bootstrap: str, prefix: str,
                          metrics: str, run_env: dict[str, str]) -> None:
    """Live latency alone, then beside an unthrottled backfill, governed and ``--no-govern``.

    This runs before the big backfill, whose shadow copies keep the side roles busy for a while after it ends.
    """
    say("live latency alone")
    asyncio.run(live_latency(bootstrap, prefix, 5.0))  # warm-up: connections, caches, the first batches
    report["live_alone"] = asyncio.run(live_latency(bootstrap, prefix, args.live_seconds))
    for mode, extra in (("governed", ("--metrics", metrics)), ("ungoverned", ("--no-govern",))):
        say(f"live latency beside an unthrottled backfill of {args.live_rows:,} rows, {mode}")
        small = work / f"live-backfill-{mode}.parquet"
        write_requests(small, args.live_rows, seed=8 if mode == "governed" else 9)
        beside = subprocess.Popen([*SCORELINE, "backfill", str(small), "--objective", "title-ranking",
                                   "--context-cols", "user_id,country,device,surface", "--payload-cols",
                                   "titles", "--json", *extra], env=run_env, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL)
        time.sleep(3.0)
        live = asyncio.run(live_latency(bootstrap, prefix, args.live_seconds))
        still_running = beside.poll() is None
        out, _ = beside.communicate(timeout=3600)
        summary = orjson.loads(out)
        alone, with_bf = report["live_alone"]["p99"], live["p99"]
        report[f"live_beside_{mode}"] = {
            **live, "p99_vs_alone": round(with_bf / alone, 2) if alone and with_bf else None,
            "backfill_outlasted_live": still_running, "backfill_seconds": summary["seconds"],
            "backfill_rows_per_s": round(args.live_rows / summary["seconds"]), "window": summary["window"]}
        say(f"{mode}: {report[f'live_beside_{mode}']}")
        wait_for_side_roles(metrics)


def big_backfill(report: dict[str, Any], args: argparse.Namespace, work: Path, metrics: str,
                 run_env: dict[str, str]) -> None:
    """``--rows`` title-ranking rows, a resume of the finished run, and ``--mix-rows`` fraud-score rows.

    The bench's throughput is for its mix, half title-ranking and half fraud-score; a backfill has one
    objective. The rate of that mix from the two backfills' rates (each request of the mix costs what it
    costs in its own backfill) is the figure to set beside the bench's.
    """
    say(f"writing {args.rows:,} rows of Parquet")
    source = work / "requests.parquet"
    write_requests(source, args.rows)
    report["input_mb"] = round(source.stat().st_size / 1e6, 1)
    say("backfill through scoreline run")
    first = run_backfill(source, work / "results.parquet", run_env, "--metrics", metrics)
    s = first["summary"]
    rate = args.rows / s["seconds"]
    report["backfill"] = {"seconds": s["seconds"], "rows_per_s": round(rate),
                          "rss_peak_mb": first["rss_peak_mb"], "exit": first["exit"],
                          **accounted(work / "results.parquet", args.rows), "window": s["window"]}
    resumed = run_backfill(source, work / "results.parquet", run_env, "--resume", "--metrics", metrics)
    report["backfill"]["resume_published"] = resumed["summary"]["published"]
    report["backfill"]["after_resume"] = accounted(work / "results.parquet", args.rows)
    say(f"backfill: {report['backfill']}")
    wait_for_side_roles(metrics)
    say(f"fraud-score backfill of {args.mix_rows:,} rows")
    fraud = work / "fraud.parquet"
    write_requests(fraud, args.mix_rows, objective="fraud-score")
    other = run_backfill(fraud, work / "fraud-results.parquet", run_env, "--metrics", metrics,
                         objective="fraud-score")
    fraud_rate = args.mix_rows / other["summary"]["seconds"]
    mix_rate = 2 / (1 / rate + 1 / fraud_rate)
    report["fraud_backfill"] = {"rows": args.mix_rows, "seconds": other["summary"]["seconds"],
                                "rows_per_s": round(fraud_rate), "rss_peak_mb": other["rss_peak_mb"],
                                **accounted(work / "fraud-results.parquet", args.mix_rows)}
    report["bench_mix_rows_per_s"] = round(mix_rate)
    if "bench_scoreline_run_rps" in report:
        report["backfill"]["vs_bench"] = round(rate / report["bench_scoreline_run_rps"], 2)
        report["bench_mix_vs_bench"] = round(mix_rate / report["bench_scoreline_run_rps"], 2)


def export_runs(n: int, work: Path, bootstrap: str, env: dict[str, str]) -> dict[str, Any]:
    """A tenth of ``n`` comparisons exported, then (the rest published) the other nine tenths, then a re-run.

    An incremental export of nine times as many rows at the same peak is what flat memory looks like; the
    re-run must write nothing.
    """
    export_prefix = f"ex{uuid.uuid4().hex[:6]}."  # a topic of these comparisons only
    export_env = {**env, "SCORELINE_TOPIC_PREFIX": export_prefix}
    topic = TopicLayout(prefix=export_prefix).shadow_comparisons
    asyncio.run(ensure_topics(bootstrap, [TopicSpec(topic, TopicLayout().shard_partitions)]))
    values = comparisons(n)
    tenth = n // 10
    to = work / "shadow-export"
    runs = []
    for label, chunk in (("first_tenth", values[:tenth]), ("the_rest", values[tenth:]), ("rerun", [])):
        if chunk:
            say(f"publishing {len(chunk):,} comparisons")
            asyncio.run(publish(bootstrap, topic, chunk, offset=0 if label == "first_tenth" else tenth))
        say(f"shadow export: {label}")
        done = export(to, export_env)
        runs.append({"run": label, "comparisons_new": len(chunk), "seconds": done["wall_s"],
                     "rss_peak_mb": done["rss_peak_mb"], "written": done["summary"]["written"],
                     "parts": done["summary"]["parts"]})
        say(f"export {label}: {runs[-1]}")
    return {"comparisons": n, "runs": runs, "exported_rows": exported_rows(to)}


if __name__ == "__main__":
    sys.exit(main())
