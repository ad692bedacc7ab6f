"""``scoreline backfill`` and ``scoreline replay`` as a user runs them: real processes, a real kill."""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from routing import parse_rules
from scoreline.cli import build_parser
from scoreline.settings import EXAMPLES_DIR
from streams.services.pipeline import Pipeline
from streams.topics import TopicLayout
from streams.transport.settings import KafkaSettings
from streams.transport.tail import TopicTail
from streams.transport.topic_reader import TopicSpan
from workflows import ModelRegistry, sample_items

SCORELINE = [sys.executable, "-m", "scoreline"]


def test_both_commands_are_registered():
    parser = build_parser()
    args = parser.parse_args(["backfill", "in.jsonl", "--objective", "title-ranking", "--rate", "50/s",
                              "--out", "o.jsonl", "--resume", "--json"])
    assert (args.file, args.rate, args.resume, args.client) == (Path("in.jsonl"), "50/s", True, "demo")
    args = parser.parse_args(["replay", "--from-topic", "scoreline.requests", "--since", "15m", "--json"])
    assert (args.from_topic, args.since, args.until) == ("scoreline.requests", "15m", None)


@pytest.fixture
async def layout(kafka_admin, unique: str):
    layout = TopicLayout(prefix=f"t{unique}.", request_partitions=2, shard_partitions=2, reply_partitions=2)
    yield layout
    kafka_admin.created.extend(t for t in await kafka_admin.list_topics() if t.startswith(layout.prefix))


@pytest.fixture
async def pipeline(kafka_bootstrap: str, layout: TopicLayout):
    text = (EXAMPLES_DIR / "rules.json").read_text().replace('"scoreline.replies.', f'"{layout.prefix}replies.')
    async with Pipeline(KafkaSettings(kafka_bootstrap), layout, parse_rules(orjson.loads(text)),
                        ModelRegistry.default()) as running:
        await running.wait_ready()
        yield running


def _requests_file(path: Path, n: int, bad: dict[int, bytes]) -> Path:
    with path.open("wb") as f:
        for number, item in enumerate(sample_items("title-ranking", n, seed=21), start=1):
            f.write(bad.get(number) or orjson.dumps({"context": item.context, "payload": item.payload}))
            f.write(b"\n")
    return path


async def _scoreline(*args: str, env: dict) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(*SCORELINE, *args, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)


def _env(bootstrap: str, layout: TopicLayout) -> dict:
    return {**os.environ, "SCORELINE_BOOTSTRAP": bootstrap, "SCORELINE_TOPIC_PREFIX": layout.prefix,
            "SCORELINE_REQUEST_PARTITIONS": "2", "SCORELINE_SHARD_PARTITIONS": "2",
            "SCORELINE_REPLY_PARTITIONS": "2"}


def _out_lines(out: Path) -> int:
    return out.read_bytes().count(b"\n") if out.exists() else 0


@pytest.mark.kafka
async def test_a_killed_backfill_resumes_without_duplicates_or_gaps(kafka_bootstrap, layout, pipeline, tmp_path):
    # 6,000 lines at 400/s take 15 s: the kill lands mid-file once 300 results are written, however slow the
    # machine (the run cannot finish first unless this loop stalls for 15 s), rather than inside a time window.
    total = 6000
    source = _requests_file(tmp_path / "requests.jsonl", total, bad={5: b"not json"})
    out = tmp_path / "results.jsonl"
    env = _env(kafka_bootstrap, layout)
    first = await _scoreline("backfill", str(source), "--objective", "title-ranking", "--rate", "400/s",
                             "--out", str(out), "--json", env=env)
    deadline = time.monotonic() + 90
    while _out_lines(out) < 300 and first.returncode is None:
        assert time.monotonic() < deadline, f"{_out_lines(out)} results written in 90 s"
        await asyncio.sleep(0.05)
    assert first.returncode is None, (await first.stderr.read()).decode()
    first.send_signal(signal.SIGKILL)
    await first.wait()
    written_before = _out_lines(out)
    assert 300 <= written_before < total

    resumed = await _scoreline("backfill", str(source), "--objective", "title-ranking", "--out", str(out),
                               "--resume", "--json", env=env)
    stdout, stderr = await asyncio.wait_for(resumed.communicate(), 90)
    assert resumed.returncode == 0, stderr.decode()[-2000:]
    summary = orjson.loads(stdout)  # exactly one JSON object on stdout
    lines = Counter(orjson.loads(row)["line"] for row in out.read_bytes().splitlines())
    assert set(lines) == set(range(1, total + 1)), "a gap"
    assert set(lines.values()) == {1}, "a duplicate"
    assert summary["lines"] == total and summary["skipped"] + summary["published"] == total
    assert summary["skipped"] >= written_before - 1  # a torn last line is published again
    assert sum(summary["results"].values()) == summary["published"] and summary["unanswered"] == 0
    assert set(summary) >= {"lines", "published", "results", "duplicates_dropped", "seconds"}
    (line_5,) = [orjson.loads(row) for row in out.read_bytes().splitlines() if orjson.loads(row)["line"] == 5]
    assert (line_5["status"], line_5["error"]["code"]) == ("error", "malformed_json")


@pytest.mark.kafka
async def test_backfill_reports_progress_and_bad_lines_on_stderr(kafka_bootstrap, layout, pipeline, tmp_path):
    source = _requests_file(tmp_path / "requests.jsonl", 200, bad={3: b"{", 7: b'{"objective": "fraud-score"}'})
    env = _env(kafka_bootstrap, layout)
    process = await _scoreline("backfill", str(source), "--objective", "title-ranking", "--json", env=env)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 50)
    assert process.returncode == 0, stderr.decode()[-2000:]
    summary = orjson.loads(stdout)
    assert summary["malformed"] == {"count": 2, "lines": [3, 7]}
    assert summary["results"]["ok"] == 198 and summary["published"] == 198
    text = stderr.decode()
    assert "line 3: malformed_json" in text and "line 7: invalid_value: objective is 'fraud-score'" in text
    assert "backfill 198/198" not in text  # --json: no progress
    process = await _scoreline("backfill", str(source), "--objective", "title-ranking", env=env)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 50)
    assert process.returncode == 0, stderr.decode()[-2000:]
    assert "backfill 198/198 100%" in stderr.decode() and "\r" not in stderr.decode()  # plain lines, no terminal
    assert stdout.decode().startswith("200 rows: 198 published")


def _parquet_requests(path: Path, n: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    rows = [{"account": f"acct-{i}", **item.context, **item.payload}
            for i, item in enumerate(sample_items("title-ranking", n, seed=23), start=1)]
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=1000)


@pytest.mark.kafka
async def test_a_killed_parquet_backfill_resumes_into_one_parquet_file_without_duplicates(kafka_bootstrap, layout,
                                                                                         pipeline, tmp_path):
    import pyarrow.parquet as pq
    total = 6000
    source = tmp_path / "requests.parquet"
    _parquet_requests(source, total)
    out = tmp_path / "results.parquet"
    parts = tmp_path / "results.parquet.parts"
    env = _env(kafka_bootstrap, layout)
    args = ("backfill", str(source), "--objective", "title-ranking", "--id-col", "account",
            "--context-cols", "user_id,country,device,surface", "--payload-cols", "titles", "--out", str(out))
    # 6,000 rows at 400/s take 15 s, and results are written out as a part every 2 s: the kill lands once a
    # part exists, mid-file however slow the machine.
    first = await _scoreline(*args, "--rate", "400/s", "--json", env=env)
    deadline = time.monotonic() + 90
    while not any(parts.glob("part-*.parquet")) and first.returncode is None:
        assert time.monotonic() < deadline, "no part written in 90 s"
        await asyncio.sleep(0.05)
    assert first.returncode is None, (await first.stderr.read()).decode()
    first.send_signal(signal.SIGKILL)
    await first.wait()
    assert not out.exists()
    kept = sum(pq.read_metadata(part).num_rows for part in parts.glob("part-*.parquet"))
    assert 0 < kept < total

    resumed = await _scoreline(*args, "--resume", "--json", env=env)
    stdout, stderr = await asyncio.wait_for(resumed.communicate(), 120)
    assert resumed.returncode == 0, stderr.decode()[-2000:]
    summary = orjson.loads(stdout)
    assert summary["format"] == "parquet" and summary["skipped"] == kept
    assert summary["published"] == total - kept and not parts.exists()
    table = pq.read_table(out)
    rows = Counter(table.column("row").to_pylist())
    assert set(rows) == set(range(1, total + 1)), "a gap"
    assert set(rows.values()) == {1}, "a duplicate"
    by_row = {r["row"]: r for r in table.to_pylist()}
    assert by_row[1]["request_id"] == "acct-1" and by_row[total]["request_id"] == f"acct-{total}"
    assert {r["status"] for r in by_row.values()} == {"ok"} and orjson.loads(by_row[1]["result"])

    again = await _scoreline(*args, "--resume", "--json", env=env)
    stdout, stderr = await asyncio.wait_for(again.communicate(), 60)
    assert again.returncode == 0, stderr.decode()[-2000:]
    assert orjson.loads(stdout)["published"] == 0 and pq.read_table(out).num_rows == total


async def _published(bootstrap: str, layout: TopicLayout) -> int:
    """Records on the backfill request topic so far."""
    async with TopicSpan(KafkaSettings(bootstrap), layout.requests_backfill) as span:
        return span.total


@pytest.mark.kafka
async def test_a_csv_backfill_and_an_unreadable_input_that_publishes_nothing(kafka_bootstrap, layout, pipeline,
                                                                             tmp_path):
    source = tmp_path / "requests.csv"
    with source.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["user_id", "country", "titles"])
        for i, item in enumerate(sample_items("title-ranking", 50, seed=5)):
            writer.writerow([f"u-{i}", item.context["country"], orjson.dumps(item.payload["titles"]).decode()])
    env = _env(kafka_bootstrap, layout)
    process = await _scoreline("backfill", str(source), "--objective", "title-ranking", "--context-cols",
                               "user_id,country", "--out", str(tmp_path / "out.jsonl"), "--json", env=env)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()[-2000:]
    summary = orjson.loads(stdout)
    assert (summary["lines"], summary["published"], summary["results"]["ok"]) == (50, 50, 50)

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.parquet").write_bytes((tmp_path / "out.jsonl").read_bytes()[:10])
    before = await _published(kafka_bootstrap, layout)
    process = await _scoreline("backfill", str(broken), "--objective", "title-ranking", "--json", env=env)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2 and stdout == b""
    assert "a.parquet cannot be read as parquet" in stderr.decode()
    assert await _published(kafka_bootstrap, layout) == before


@pytest.mark.kafka
async def test_replay_cli_prints_one_json_summary(kafka_bootstrap, layout, pipeline, tmp_path):
    env = _env(kafka_bootstrap, layout)
    source = _requests_file(tmp_path / "requests.jsonl", 20, bad={})
    async with TopicTail(KafkaSettings(kafka_bootstrap), [layout.requests_backfill]) as backfill_topic:
        process = await _scoreline("backfill", str(source), "--objective", "title-ranking", "--json", env=env)
        await asyncio.wait_for(process.communicate(), 50)
        assert await backfill_topic.wait_for(lambda: len(backfill_topic.records) == 20, 20)
        since = min(r.timestamp for r in backfill_topic.records)
        process = await _scoreline("replay", "--from-topic", layout.requests_backfill, "--since", str(since),
                                   "--json", env=env)
        stdout, stderr = await asyncio.wait_for(process.communicate(), 50)
        assert process.returncode == 0, stderr.decode()[-2000:]
        assert await backfill_topic.wait_for(lambda: len(backfill_topic.records) == 40, 20)
    summary = orjson.loads(stdout)
    assert (summary["scanned"], summary["published"]) == (20, 20)
    replayed = [orjson.loads(r.value)["request_id"] for r in backfill_topic.records[20:]]
    assert sorted(replayed) == sorted(orjson.loads(r.value)["request_id"] for r in backfill_topic.records[:20])
