"""A backfill's tables, outputs and governor: pure, no broker (pyarrow from ``scoreline[data]``)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from schemas.errors import InvalidMessage
from schemas.messages import ErrorInfo, Result
from streams.client.backfill_lines import RequestIds, prepare_rows
from streams.client.backfill_results import DoneRows, ParquetResults, results_out
from streams.client.backfill_tables import Columns, input_files, input_format, read_rows, source_digest
from streams.client.governor import Governor, live_buckets_of
from streams.topics import TopicLayout
from workflows import sample_items

LAYOUT = TopicLayout(prefix="x.")


def _flat(n: int, seed: int = 3) -> list[dict]:
    return [{**item.context, **item.payload} for item in sample_items("title-ranking", n, seed=seed)]


def _requests(path: Path, columns: Columns, fmt: str = "parquet"):
    return list(prepare_rows(read_rows(input_files(path, fmt), fmt, columns), digest="d", objective="title-ranking",
                             client="demo", layout=LAYOUT))


def test_flat_parquet_columns_become_context_and_payload(tmp_path):
    rows = _flat(3)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in.parquet")
    lines = _requests(tmp_path / "in.parquet", Columns(context_cols=("user_id", "country", "device", "surface")))
    assert [line.number for line in lines] == [1, 2, 3]
    first = lines[0].request
    assert first is not None and first.request_id == "bf-d-1" and first.traffic == "backfill"
    assert first.context == {k: rows[0][k] for k in ("user_id", "country", "device", "surface")}
    assert first.payload == {"titles": rows[0]["titles"]}  # every column left is the payload's


def test_struct_context_and_payload_columns_and_an_id_column_are_used_whole(tmp_path):
    items = sample_items("title-ranking", 2, seed=4)
    table = pa.Table.from_pylist([{"key": 100 + i, "context": it.context, "payload": it.payload}
                                  for i, it in enumerate(items)])
    pq.write_table(table, tmp_path / "in.parquet")
    lines = _requests(tmp_path / "in.parquet", Columns(id_col="key"))
    assert [(line.request_id, line.request.context) for line in lines if line.request] == \
        [("100", items[0].context), ("101", items[1].context)]


def test_csv_cells_holding_json_arrays_are_lists(tmp_path):
    rows = [{**r, "titles": orjson.dumps(r["titles"]).decode()} for r in _flat(2)]
    pacsv.write_csv(pa.Table.from_pylist(rows), tmp_path / "in.csv")
    assert input_format(tmp_path / "in.csv", None) == "csv"
    lines = _requests(tmp_path / "in.csv", Columns(context_cols=("user_id", "country")), fmt="csv")
    assert lines[1].request is not None and lines[1].request.payload["titles"] == _flat(2)[1]["titles"]
    assert lines[1].request.payload["device"] == rows[1]["device"]


def test_a_missing_column_is_named_before_any_row(tmp_path):
    pq.write_table(pa.Table.from_pylist(_flat(2)), tmp_path / "in.parquet")
    with pytest.raises(InvalidMessage) as err:
        _requests(tmp_path / "in.parquet", Columns(context_cols=("user_id", "region")))
    assert err.value.field == "region" and "has no column 'region'" in str(err.value)
    assert "user_id" in str(err.value)  # the columns it does have


def test_a_wrong_type_rejects_that_row_and_names_the_field(tmp_path):
    table = pa.Table.from_pylist([{"context": {"user_id": "u-1"}, "deadline_ms": "soon"},
                                  {"context": {"user_id": "u-2"}, "deadline_ms": "5000"}])
    pq.write_table(table, tmp_path / "in.parquet")
    lines = _requests(tmp_path / "in.parquet", Columns())
    assert [line.number for line in lines] == [1, 2]
    assert all(line.request is None and line.error is not None and line.error.field == "deadline_ms"
               for line in lines)


def test_an_unreadable_file_is_an_error_naming_it(tmp_path):
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InvalidMessage) as err:
        _requests(tmp_path / "broken.parquet", Columns())
    assert err.value.field == "file" and "broken.parquet cannot be read as parquet" in str(err.value)


def test_column_options_are_refused_for_json_lines(tmp_path):
    (tmp_path / "in.jsonl").write_text("{}\n")
    with pytest.raises(InvalidMessage) as err:
        list(read_rows([tmp_path / "in.jsonl"], "jsonl", Columns(id_col="id")))
    assert err.value.field == "format"


def test_a_directory_is_read_in_path_order_with_one_numbering_and_a_stable_digest(tmp_path):
    for part, seed in (("b", 1), ("a", 2)):
        (tmp_path / f"date={part}").mkdir()
        pq.write_table(pa.Table.from_pylist(_flat(2, seed)), tmp_path / f"date={part}" / "part-0.parquet")
    (tmp_path / "_SUCCESS").write_text("")
    fmt = input_format(tmp_path, None)
    files = input_files(tmp_path, fmt)
    assert [f.parent.name for f in files] == ["date=a", "date=b"]
    numbers = [n for n, _ in read_rows(files, fmt, Columns(context_cols=("user_id",)))]
    assert numbers == [1, 2, 3, 4]
    before = source_digest(files, tmp_path)
    assert source_digest(input_files(tmp_path, fmt), tmp_path) == before
    (tmp_path / "date=a" / "part-0.parquet").rename(tmp_path / "date=a" / "part-1.parquet")
    assert source_digest(input_files(tmp_path, fmt), tmp_path) != before


def test_request_ids_find_rows_and_ids_used_twice():
    ids = RequestIds()
    for row, rid in enumerate(["a", "b", "a", "c", "b"], start=1):
        ids.add(rid, row)
    ids.freeze()
    assert [ids.row_of(r) for r in ("a", "b", "c", "zz")] == [1, 2, 4, None]
    assert [ids.first_use(row) for row in range(1, 6)] == [None, None, 1, None, 2]


def test_done_rows_is_a_set_of_row_numbers():
    done = DoneRows([3, 1_000_000, 3])
    assert 3 in done and 1_000_000 in done and 4 not in done and 2_000_000 not in done and len(done) == 2


def _result(i: int) -> Result:
    return Result(request_id=f"r-{i}", objective="title-ranking", status="ok" if i % 2 else "error",
                  model="title-ranking@v1", result={"ranked": [i]} if i % 2 else None,
                  error=None if i % 2 else ErrorInfo("workflow_error", "boom", "payload"),
                  timings_ms={"total": 1.5}, traffic="backfill")


def test_parquet_results_write_parts_then_one_typed_file_and_resume_counts_both(tmp_path, monkeypatch):
    monkeypatch.setattr("streams.client.backfill_results.PART_ROWS", 4)
    monkeypatch.setattr("streams.client.backfill_results.PART_SECONDS", 1e9)
    out = tmp_path / "results.parquet"
    first = results_out(out)
    assert isinstance(first, ParquetResults)
    for i in range(1, 11):
        first.add(i, _result(i))
    assert len(list(first.parts.glob("part-*.parquet"))) == 2 and not out.exists()  # as a kill would leave it
    (first.parts / "part-000009.parquet.tmp").write_bytes(b"torn")
    again = ParquetResults(out)
    done = again.done_rows()
    assert len(done) == 8 and 8 in done and 9 not in done
    for i in (9, 10, 11):
        again.add(i, _result(i))
    again.close()
    assert not again.parts.exists()
    table = pq.read_table(out)
    assert sorted(table.column("row").to_pylist()) == list(range(1, 12))
    assert table.schema.field("rules_version").type == pa.int64()
    row = table.filter(pa.compute.equal(table.column("row"), 2)).to_pylist()[0]
    assert (row["status"], row["error_code"], row["error_field"], row["result"]) == \
        ("error", "workflow_error", "payload", None)
    row = table.filter(pa.compute.equal(table.column("row"), 3)).to_pylist()[0]
    assert orjson.loads(row["result"]) == {"ranked": [3]} and row["timings_ms"] == [("total", 1.5)]


def test_resuming_into_a_file_that_is_not_a_backfills_parquet_is_refused(tmp_path):
    (tmp_path / "results.parquet").write_text("not parquet")
    with pytest.raises(InvalidMessage) as err:
        ParquetResults(tmp_path / "results.parquet").done_rows()
    assert err.value.field == "out"


def test_the_governor_halves_on_a_live_rise_grows_otherwise_and_opens_without_live_traffic():
    governor = Governor(1000, min_window=16)
    assert governor.window == 16  # slow start
    assert governor.observe(100, 0.010) == 20  # the first live p99 is the baseline: grow a quarter
    assert governor.observe(100, 0.011) == 25
    assert governor.observe(100, 0.030) == 16  # 3x the baseline: halve (not below the minimum)
    assert governor.backoffs == 1
    assert governor.observe(0, None) == 32  # no live results: nothing to protect
    assert governor.observe(3, 0.5) == 64  # too few to measure
    for _ in range(20):
        governor.observe(100, 0.010)
    assert governor.window == 1000  # never above --window


def test_the_governor_baseline_follows_a_lasting_rise():
    governor = Governor(1000, min_window=16)
    governor.observe(100, 0.010)
    for _ in range(40):
        governor.observe(100, 0.030)  # live latency rose for good (more live load)
    assert governor.window > 16 and governor.baseline is not None and governor.baseline > 0.020


def test_live_buckets_are_the_workers_live_results_only():
    text = "\n".join([
        "# TYPE scoreline_result_latency_seconds histogram",
        *(f'scoreline_result_latency_seconds_bucket{{role="{role}",objective="o",model="m",traffic="{traffic}",'
          f'le="{le}"}} {n}'
          for role, traffic, scale in (("worker", "live", 1), ("worker", "backfill", 100), ("shadow", "live", 1000))
          for le, n in (("0.01", 5 * scale), ("0.1", 9 * scale), ("+Inf", 10 * scale))),
    ]) + "\n"
    assert live_buckets_of(text) == {0.01: 5.0, 0.1: 9.0, float("inf"): 10.0}
