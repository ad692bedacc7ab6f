"""The figures of docs/clients.md, "A million rows, measured": a Parquet backfill, live latency beside one, an export.

    .venv/bin/python scripts/backfill_figures.py [--rows 1000000] [--live-rows 200000] [--comparisons 1000000]
        [--bench-duration 10] [--bootstrap HOST:PORT] [--json]

Needs ``pip install 'scoreline[data,bench]'``. Against the local broker (started if none runs) or
``--bootstrap``, under a topic prefix of its own:

1. ``scoreline bench --only ceiling,scoreline_run``: what the pipeline users run sustains (the
   reference for the backfill's throughput);
2. ``scoreline run`` (every role, shadowing on) and a ``--rows`` Parquet file backfilled through
   it with ``scoreline backfill --out results.parquet``: seconds, rows a second, the backfill
   process's peak RSS, and every row accounted for in the output (rows = results, no duplicates);
3. 100 live requests a second through ``ScoreClient`` for a while alone, then beside an
   unthrottled (governed) backfill of ``--live-rows`` rows: live p50/p99 both ways;
4. ``--comparisons`` comparisons published to the comparison topic and ``scoreline shadow export``
   of them (seconds, peak RSS), then a second export, which must write nothing.

Prints one JSON object with ``--json`` (progress on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]

import numpy as np  # noqa: E402
import orjson  # noqa: E402

from schemas import codec  # noqa: E402
from schemas.messages import Comparison  # noqa: E402
from streams.bench.client_load import percentiles  # noqa: E402
from streams.client.score_client import ScoreClient  # noqa: E402
from streams.topics import TopicLayout  # noqa: E402
from streams.transport.settings import KafkaSettings  # noqa: E402
from workflows import sample_items  # noqa: E402

SCORELINE = [sys.executable, "-m", "scoreline"]
LIVE_RPS = 100.0


def say(text: str) -> None:
    print(f"backfill_figures: {text}", file=sys.stderr, flush=True)


def write_requests(path: Path, rows: int, seed: int = 7) -> None:
    """``rows`` title-ranking requests as a flat Parquet table: context columns and a list of 20 titles."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    rng = np.random.default_rng(seed)
    chunk = 100_000
    with pq.ParquetWriter(path, pa.schema([("user_id", pa.string()), ("country", pa.string()),
                                           ("device", pa.string()), ("surface", pa.string()),
                                           ("titles", pa.list_(pa.string()))])) as writer:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            titles = pa.array([f"t-{k}" for k in rng.integers(0, 400, n * 20)], pa.string())
            writer.write_table(pa.table({
                "user_id": pa.array([f"u-{k}" for k in rng.integers(0, 100_000, n)]),
                "country": pa.array(rng.choice(["US", "GB", "DE", "BR", "IN"], n)),
                "device": pa.array(rng.choice(["tv", "mobile", "web"], n)),
                "surface": pa.array(rng.choice(["home", "search"], n)),
                "titles": pa.ListArray.from_arrays(pa.array(np.arange(0, n * 20 + 1, 20, dtype=np.int32)), titles),
            }))


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


def run_backfill(source: Path, out: Path, env: dict[str, str], *extra: str) -> dict[str, Any]:
    process = scoreline("backfill", str(source), "--objective", "title-ranking", "--context-cols",
                        "user_id,country,device,surface", "--payload-cols", "titles", "--out", str(out),
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


async def publish(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = KafkaSettings(bootstrap).producer("figures")
    await producer.start()
    try:
        for i, value in enumerate(values):
            await producer.send(topic, value, key=str(i).encode())
        await producer.flush()
    finally:
        await producer.stop()


def export(to: Path, env: dict[str, str]) -> dict[str, Any]:
    process = scoreline("shadow", "export", "--to", str(to), "--json", env=env)
    began = time.monotonic()
    peak, code = peak_rss_mb(process)
    assert process.stdout is not None
    return {"summary": orjson.loads(process.stdout.read()), "rss_peak_mb": peak, "exit": code,
            "wall_s": round(time.monotonic() - began, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default=os.environ.get("SCORELINE_BOOTSTRAP"))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--live-rows", type=int, default=200_000)
    parser.add_argument("--live-seconds", type=float, default=30.0)
    parser.add_argument("--comparisons", type=int, default=1_000_000)
    parser.add_argument("--bench-duration", type=float, default=10.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    bootstrap = args.bootstrap
    if bootstrap is None:
        subprocess.run([*SCORELINE, "broker", "start"], check=True, stdout=subprocess.DEVNULL)
        bootstrap = "127.0.0.1:9092"
    prefix = f"bf{uuid.uuid4().hex[:6]}."
    env = {**os.environ, "SCORELINE_BOOTSTRAP": bootstrap, "SCORELINE_TOPIC_PREFIX": prefix}
    report: dict[str, Any] = {"rows": args.rows, "prefix": prefix}
    work = Path(tempfile.mkdtemp(prefix="scoreline-figures-"))

    say("bench: scoreline_run beside the ceiling")
    bench = subprocess.run([*SCORELINE, "bench", "--only", "ceiling,scoreline_run", "--duration",
                            str(args.bench_duration), "--json"], env={**os.environ, "SCORELINE_BOOTSTRAP": bootstrap},
                           check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    figures = orjson.loads(bench.stdout)
    pipelines = figures.get("pipelines", figures)
    report["bench_scoreline_run_rps"] = pipelines["scoreline_run"]["throughput_rps"]

    rules = work / "rules.json"
    rules.write_text((Path(__file__).resolve().parent.parent / "scoreline" / "examples" / "rules.json").read_text()
                     .replace('"scoreline.replies.', f'"{prefix}replies.'))
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        metrics = f"127.0.0.1:{free.getsockname()[1]}"
    run = subprocess.Popen([*SCORELINE, "run", "--rules", str(rules), "--metrics-port", metrics.split(":")[1]],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        say(f"writing {args.rows:,} rows of Parquet")
        source = work / "requests.parquet"
        write_requests(source, args.rows)
        report["input_mb"] = round(source.stat().st_size / 1e6, 1)
        say("backfill through scoreline run")
        run_env = {**env, "SCORELINE_RULES": str(rules)}
        first = run_backfill(source, work / "results.parquet", run_env, "--metrics", metrics)
        s = first["summary"]
        report["backfill"] = {"seconds": s["seconds"], "rows_per_s": round(args.rows / s["seconds"]),
                              "rss_peak_mb": first["rss_peak_mb"], "exit": first["exit"],
                              "vs_bench": round(args.rows / s["seconds"] / report["bench_scoreline_run_rps"], 2),
                              **accounted(work / "results.parquet", args.rows)}
        resumed = run_backfill(source, work / "results.parquet", run_env, "--resume", "--metrics", metrics)
        report["backfill"]["resume_published"] = resumed["summary"]["published"]
        report["backfill"]["window"] = s["window"]

        say("live latency alone, then beside an unthrottled backfill")
        report["live_alone"] = asyncio.run(live_latency(bootstrap, prefix, args.live_seconds))
        small = work / "live-backfill.parquet"
        write_requests(small, args.live_rows, seed=8)
        # The backfill's governor watches `scoreline run`'s live latency on its metrics.
        beside = subprocess.Popen([*SCORELINE, "backfill", str(small), "--objective", "title-ranking",
                                   "--context-cols", "user_id,country,device,surface", "--payload-cols", "titles",
                                   "--json", "--metrics", metrics],
                                  env=run_env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        time.sleep(2.0)
        report["live_beside_backfill"] = asyncio.run(live_latency(bootstrap, prefix, args.live_seconds))
        out, _ = beside.communicate(timeout=1800)
        report["live_backfill"] = orjson.loads(out)
        alone, with_bf = report["live_alone"]["p99"], report["live_beside_backfill"]["p99"]
        report["live_p99_ratio"] = round(with_bf / alone, 2) if alone and with_bf else None
    finally:
        run.terminate()
        run.wait(timeout=60)

    say(f"publishing {args.comparisons:,} comparisons")
    topic = TopicLayout(prefix=prefix).shadow_comparisons
    asyncio.run(publish(bootstrap, topic, comparisons(args.comparisons)))
    to = work / "shadow-export"
    first_export = export(to, env)
    second_export = export(to, env)
    report["export"] = {"comparisons": args.comparisons, "seconds": first_export["wall_s"],
                        "rss_peak_mb": first_export["rss_peak_mb"], "written": first_export["summary"]["written"],
                        "parts": first_export["summary"]["parts"],
                        "rerun_written": second_export["summary"]["written"],
                        "rerun_rss_peak_mb": second_export["rss_peak_mb"]}
    if args.json:
        print(orjson.dumps(report).decode())
    else:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
