"""``shadow export``: the comparison topic to Parquet on a real broker, incrementally, each pair once; the
report from the export; and the DuckDB queries of docs/shadow.md run against it."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import duckdb
import pytest

from schemas import codec
from schemas.messages import Comparison
from scoreline.shadow_report import summarize
from streams.client import shadow_export
from streams.client.shadow_export import STATE_FILE, export_comparisons, read_export
from streams.topics import TopicSpec
from streams.transport.admin import ensure_topics
from streams.transport.kafka import aiokafka_producer
from streams.transport.settings import KafkaSettings
from streams.transport.topic_reader import read_topic

DOCS = Path(__file__).resolve().parents[3] / "docs" / "shadow.md"
DAY = 86_400_000
BASE_MS = 1_764_806_400_000  # 2025-12-04T00:00:00Z


def _ranking(i: int) -> Comparison:
    overlap = (i % 5) / 4
    return Comparison(f"r-{i}", "title-ranking", "title-ranking@v1", "title-ranking@v2", i % 7 != 0,
                      None if i % 7 else "shadow_failed", 3, "treatment" if i % 2 else None, "ok",
                      "ok" if i % 7 else "error", 2.0 + i % 3, 3.0 + i % 4,
                      {"kind": "ranking", "top_k_overlap": overlap, "top1_agrees": overlap == 1.0,
                       "kendall_tau": overlap - 0.5} if i % 7 else {},
                      "live", {"country": ("US", "GB", "DE")[i % 3], "device": ("tv", "mobile")[i % 2],
                               "client": "demo"}, BASE_MS + (i % 2) * DAY + i)


def _probability(i: int) -> Comparison:
    return Comparison(f"f-{i}", "fraud-score", "fraud-score@v1", "fraud-score@v2", True, None, 3, None, "ok", "ok",
                      1.0, 1.5, {"kind": "probability", "abs_diff": 0.01 * (i % 4), "delta": 0.01,
                                 "band_agrees": i % 4 != 3},
                      "backfill", {"country": ("US", "FR")[i % 2], "device": "web"}, BASE_MS + i)


async def _publish(kafka, topic: str, values: list[bytes]) -> None:
    producer = aiokafka_producer(kafka, "test-export")
    await producer.start()
    try:
        for i, value in enumerate(values):
            await producer.send(topic, value, key=str(i).encode())
        await producer.flush()
    finally:
        await producer.stop()


def _pairs(directory: Path) -> Counter:
    return Counter((c.request_id, c.shadow_model) for c in read_export(directory))


@pytest.mark.kafka
async def test_an_export_writes_each_pair_once_resumes_and_serves_the_report_and_the_docs_queries(
        kafka, layout, tmp_path, monkeypatch):
    topic = layout.shadow_comparisons
    await ensure_topics(kafka.bootstrap, [TopicSpec(topic, 2)])
    first = [_ranking(i) for i in range(200)] + [_probability(i) for i in range(100)]
    repeats = first[:20]  # the comparator's at-least-once replays
    await _publish(kafka, topic, [codec.encode(c) for c in first + repeats] + [b"not a comparison"])
    to = tmp_path / "shadow-export"

    summary = await export_comparisons(kafka, topic, to)
    assert (summary["read"], summary["written"], summary["repeats_dropped"], summary["undecodable"]) == \
        (321, 300, 20, 1)
    assert {p.relative_to(to).parent.as_posix() for p in to.rglob("*.parquet")} == {
        "objective=title-ranking/date=2025-12-04", "objective=title-ranking/date=2025-12-05",
        "objective=fraud-score/date=2025-12-04"}
    pairs = _pairs(to)
    assert len(pairs) == 300 and set(pairs.values()) == {1}
    files = sorted(to.rglob("*.parquet"))

    again = await export_comparisons(kafka, topic, to)
    assert (again["read"], again["written"], again["parts"]) == (0, 0, 0)
    assert sorted(to.rglob("*.parquet")) == files

    # New comparisons and more repeats; the run is killed between its commit and its renames.
    later = [_ranking(i) for i in range(200, 250)]
    await _publish(kafka, topic, [codec.encode(c) for c in later + first[100:110]])
    real_replace = shadow_export.os.replace

    def killed_after_the_commit(src, dst):
        if str(src).endswith(".parquet.tmp"):
            raise KeyboardInterrupt("killed")
        real_replace(src, dst)
    monkeypatch.setattr(shadow_export.os, "replace", killed_after_the_commit)
    with pytest.raises(KeyboardInterrupt):
        await export_comparisons(kafka, topic, to)
    monkeypatch.setattr(shadow_export.os, "replace", real_replace)
    assert list(to.rglob("*.parquet.tmp"))
    resumed = await export_comparisons(kafka, topic, to)
    assert resumed["read"] == 0 and not list(to.rglob("*.tmp"))  # the committed batch, renamed, not re-read
    pairs = _pairs(to)
    assert len(pairs) == 350 and set(pairs.values()) == {1}

    # The report from the export is the report from the topic.
    from_topic = summarize([codec.decode_comparison(r.value) for r in await read_topic(kafka, topic)
                            if r.value != b"not a comparison"])
    from_export = summarize(list(read_export(to)))
    assert from_export["pairs"] == from_topic["pairs"] and from_export["comparisons"] == 350
    assert {p["objective"] for p in summarize(list(read_export(to, objective="fraud-score")))["pairs"]} == \
        {"fraud-score"}
    assert len(list(read_export(to, since_ms=BASE_MS + DAY))) == 125  # the odd title-ranking rows, a day later
    assert (to / STATE_FILE).exists()

    # The docs' queries, as written, over this export.
    queries = re.findall(r"```sql\n(.*?)```", DOCS.read_text(), flags=re.S)
    assert len(queries) == 3
    results = [duckdb.sql(q.replace("'shadow-export/", f"'{to}/")).fetchall() for q in queries]
    by_country = {row[1]: row for row in results[0]}
    assert set(by_country) == {"US", "GB", "DE"} and sum(row[2] for row in results[0]) == 250
    assert all(0 <= row[3] <= 1 for row in results[0])
    expected = sum(c.matched for c in first[:200] + later if c.context["country"] == "US") / \
        sum(c.context["country"] == "US" for c in first[:200] + later)
    assert by_country["US"][3] == pytest.approx(expected)
    deltas = {(row[0], row[2].isoformat()): row for row in results[1]}
    assert set(deltas) == {("fraud-score", "2025-12-04"), ("title-ranking", "2025-12-04"),
                           ("title-ranking", "2025-12-05")}
    assert deltas[("fraud-score", "2025-12-04")][4] == pytest.approx(0.5)
    assert [(row[0], row[1], row[2], row[3]) for row in results[2]] == [("FR", "web", 50, 0.5), ("US", "web", 50, 1.0)]


async def test_an_export_into_another_topics_directory_is_refused(tmp_path):
    (tmp_path / STATE_FILE).write_bytes(b'{"topic": "other", "offsets": {}, "committing": [], "batches": 0, '
                                        b'"exported": 0, "recent": ""}')
    with pytest.raises(Exception, match="is an export of other"):
        await export_comparisons(KafkaSettings("127.0.0.1:1"), "mine", tmp_path)  # refused before it connects
