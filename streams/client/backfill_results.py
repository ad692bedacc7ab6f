"""Where a backfill's results go: JSON Lines, or Parquet when ``--out`` ends in ``.parquet``.

Both write each row's result once, say which rows already have one (for ``--resume``), and
survive a kill: what was written before it is kept and counted.

JSON Lines append one line per result (``line`` first, then the result message); a last line
cut short by a crash is dropped on resume.

Parquet cannot be appended to and is unreadable until its footer is written, so while a
backfill runs its results go, every :data:`PART_ROWS` rows or :data:`PART_SECONDS` (a kill
loses no more work than that), into complete files under
``OUT.parquet.parts/`` (each written under a temporary name, then renamed). When the backfill
ends they are merged into ``OUT.parquet``, a batch at a time, and the directory is removed. A
resume counts the rows of ``OUT.parquet`` and of every part, and merges them all at its end.

The Parquet columns (typed, to join back to the input on ``request_id`` or ``row``):
``row`` int64, ``request_id``, ``status``, ``model``, ``cell``, ``shard``, ``traffic``,
``rules_version`` int64, ``error_code``, ``error_message``, ``error_field``, ``result`` (the
result as JSON text), ``timings_ms`` map<string, double>.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any, Protocol

import orjson

from schemas.errors import ErrorCode, InvalidMessage
from schemas.messages import Result
from streams.client.backfill_lines import output_line, read_done_lines

__all__ = ["PART_ROWS", "PART_SECONDS", "DoneRows", "JsonLinesResults", "ParquetResults", "ResultsOut", "results_out"]

PART_ROWS = 50_000
"Results buffered before a Parquet part is written (about 20 MB of Python objects at most)."

PART_SECONDS = 2.0
"Seconds of results buffered at most before a Parquet part is written."


class DoneRows:
    """A set of row numbers as a bitmap: a byte per row, so a million rows cost a megabyte."""

    def __init__(self, rows: object = ()) -> None:
        self._bits = bytearray()
        self.count = 0
        for row in rows:  # type: ignore[attr-defined]
            self.add(int(row))

    def add(self, row: int) -> None:
        if row >= len(self._bits):
            self._bits.extend(bytes(max(row + 1 - len(self._bits), len(self._bits))))
        if not self._bits[row]:
            self._bits[row] = 1
            self.count += 1

    def __contains__(self, row: int) -> bool:
        return row < len(self._bits) and self._bits[row] == 1

    def __len__(self) -> int:
        return self.count


class ResultsOut(Protocol):
    """A backfill's output."""

    def done_rows(self) -> DoneRows:
        """The rows that already have a result (read once, before the backfill publishes)."""
        ...

    def add(self, row: int, result: Result) -> None:
        """Write ``row``'s result."""
        ...

    def close(self) -> None:
        """Write what is buffered and finish the output."""
        ...


def results_out(path: Path) -> ResultsOut:
    """The output for ``path``: Parquet for ``.parquet``, JSON Lines otherwise."""
    return ParquetResults(path) if path.suffix.lower() == ".parquet" else JsonLinesResults(path)


class JsonLinesResults:
    """One JSON line per result, appended unbuffered (a kill loses at most the line being written)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: Any = None

    def done_rows(self) -> DoneRows:
        return DoneRows(read_done_lines(self.path))

    def add(self, row: int, result: Result) -> None:
        if self._file is None:
            self._file = self.path.open("ab", buffering=0)
        self._file.write(output_line(row, result))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class ParquetResults:
    """Typed result rows in Parquet: parts while running, one file at the end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.parts = path.with_name(path.name + ".parts")
        self._rows: list[dict[str, Any]] = []
        self._written = 0
        self._last_part = time.monotonic()

    def done_rows(self) -> DoneRows:
        pq = _parquet()
        done = DoneRows()
        for source in self._sources():
            try:
                for batch in pq.ParquetFile(source).iter_batches(columns=["row"], batch_size=65_536):
                    for row in batch.column(0).to_pylist():
                        done.add(row)
            except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a file that is not Parquet
                raise InvalidMessage(ErrorCode.INVALID_VALUE, f"{source} is not a backfill's Parquet output "
                                     f"({exc}); refusing to resume into it", field="out") from None
        return done

    def add(self, row: int, result: Result) -> None:
        error = result.error
        self._rows.append({
            "row": row, "request_id": result.request_id, "status": result.status, "model": result.model,
            "cell": result.cell, "shard": result.shard, "traffic": result.traffic,
            "rules_version": result.rules_version,
            "error_code": error.code if error else None, "error_message": error.message if error else None,
            "error_field": error.field if error else None,
            "result": orjson.dumps(result.result).decode() if result.result is not None else None,
            "timings_ms": list(result.timings_ms.items()),
        })
        if len(self._rows) >= PART_ROWS or time.monotonic() - self._last_part >= PART_SECONDS:
            self._write_part()

    def close(self) -> None:
        """Write the last part, then merge every part (and an earlier run's file) into ``path``."""
        self._write_part()
        sources = self._sources()
        if not sources or sources == [self.path]:
            return
        pq = _parquet()
        merging = self.path.with_name(self.path.name + ".merging")
        with pq.ParquetWriter(merging, _schema()) as writer:
            for source in sources:
                for batch in pq.ParquetFile(source).iter_batches(batch_size=65_536):
                    writer.write_batch(batch)
        os.replace(merging, self.path)
        shutil.rmtree(self.parts, ignore_errors=True)

    def _sources(self) -> list[Path]:
        """The finished file (if any) and the complete parts; a part a kill left half-written is removed."""
        found = [self.path] if self.path.exists() else []
        if self.parts.is_dir():
            for torn in self.parts.glob("*.tmp"):
                torn.unlink()
            found.extend(sorted(self.parts.glob("part-*.parquet")))
        return found

    def _write_part(self) -> None:
        if not self._rows:
            return
        pa, pq = _pyarrow(), _parquet()
        self.parts.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist(self._rows, schema=_schema())
        existing = len(list(self.parts.glob("part-*.parquet")))
        name = self.parts / f"part-{existing:06d}.parquet"
        tmp = name.with_name(name.name + ".tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, name)
        self._written += len(self._rows)
        self._rows = []
        self._last_part = time.monotonic()


def _schema() -> Any:
    pa = _pyarrow()
    text = pa.string()
    return pa.schema([
        ("row", pa.int64()), ("request_id", text), ("status", text), ("model", text), ("cell", text),
        ("shard", text), ("traffic", text), ("rules_version", pa.int64()), ("error_code", text),
        ("error_message", text), ("error_field", text), ("result", text),
        ("timings_ms", pa.map_(text, pa.float64())),
    ])


def _pyarrow() -> Any:
    try:
        import pyarrow
    except ImportError:
        raise InvalidMessage(ErrorCode.INVALID_VALUE, "writing Parquet needs pyarrow: pip install 'scoreline[data]'",
                             field="out") from None
    return pyarrow


def _parquet() -> Any:
    _pyarrow()
    import pyarrow.parquet as pq
    return pq
