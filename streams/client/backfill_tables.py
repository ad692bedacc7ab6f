"""A backfill's input as rows: JSON Lines, Parquet or CSV, one file or a directory of them.

Every format comes out the same way: ``(row number, request body or error)``, the body a dict
in the contract's request shape, ready for :func:`streams.client.backfill_lines.prepare_rows`.
Rows are numbered from 1 across the whole input (files in the order of their paths), so a
row's number, and with it its derived request id, is the same on every run.

Tables (Parquet, CSV) map columns to the request (the defaults, documented in docs/clients.md):

- a column named like a request field (``request_id``, ``objective``, ``client``, ``reply_to``,
  ``context``, ``payload``, ``deadline_ms``, ``model``) is that field; ``context`` and
  ``payload`` may be structs, maps or JSON text;
- ``id_col`` names the request id's column instead of ``request_id`` (integers become text);
- ``context_cols`` gathers flat columns into the context, ``payload_cols`` into the payload;
- without ``payload_cols`` and without a ``payload`` column, every column not used above is
  a payload field;
- CSV has no lists or objects, so a CSV cell holding a JSON array or object (``["t-1", "t-2"]``)
  is parsed as one.

Parquet is read a row group's batch at a time and CSV a block at a time, so memory stays flat
however long the input. pyarrow is imported only when a table is read (``scoreline[data]``).
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import decimal
import hashlib
import platform
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from schemas.errors import ErrorCode, InvalidMessage

__all__ = ["FORMATS", "REQUEST_COLUMNS", "Columns", "RowBody", "input_files", "input_format", "parse_line",
           "read_rows", "release_memory_promptly", "source_digest"]

FORMATS = ("jsonl", "parquet", "csv")
"The input formats, named as ``--format`` takes them."

_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet",
               ".csv": "csv"}

REQUEST_COLUMNS = ("request_id", "objective", "client", "reply_to", "context", "payload", "deadline_ms", "model")
"Table columns taken as the request field of the same name."

BATCH_ROWS = 8192
"Rows read from a table at a time."

RowBody = dict[str, Any] | InvalidMessage
"A row's request body, or why the row holds none."


@dataclass(frozen=True, slots=True)
class Columns:
    """How a table's columns make a request (None: the default of the module docstring)."""

    id_col: str | None = None
    "The request id's column (default ``request_id`` where the table has one; else ids are derived)."
    context_cols: tuple[str, ...] | None = None
    "Flat columns gathered into the context (default: the ``context`` column)."
    payload_cols: tuple[str, ...] | None = None
    "Flat columns gathered into the payload (default: the ``payload`` column, else every column left)."

    @classmethod
    def parse(cls, id_col: str | None, context_cols: str | None, payload_cols: str | None) -> Columns:
        """From the command line's comma-separated lists."""
        def names(text: str | None) -> tuple[str, ...] | None:
            return None if text is None else tuple(n.strip() for n in text.split(",") if n.strip())
        return cls(id_col, names(context_cols), names(payload_cols))

    def is_default(self) -> bool:
        return self.id_col is None and self.context_cols is None and self.payload_cols is None


def input_format(path: Path, given: str | None) -> str:
    """The input's format: ``given``, or from the file's extension (a directory's files' extension).

    Raises:
        InvalidMessage: ``invalid_value`` naming ``format``.
    """
    if given is not None:
        if given not in FORMATS:
            raise InvalidMessage(ErrorCode.INVALID_VALUE, f"format must be one of {', '.join(FORMATS)}, got {given!r}",
                                 field="format")
        return given
    if path.is_dir():
        found = {_EXTENSIONS[p.suffix.lower()] for p in path.rglob("*") if p.is_file() and p.suffix.lower() in
                 _EXTENSIONS}
        if len(found) != 1:
            raise InvalidMessage(ErrorCode.INVALID_VALUE,
                                 f"{path} holds {'no' if not found else 'mixed'} input files "
                                 f"({', '.join(sorted(found)) or 'none of .jsonl, .parquet, .csv'}); pass --format",
                                 field="format")
        return found.pop()
    fmt = _EXTENSIONS.get(path.suffix.lower())
    return fmt or "jsonl"


def input_files(path: Path, fmt: str) -> list[Path]:
    """The files of the input, in the order their rows are numbered: sorted by path under a directory.

    Raises:
        InvalidMessage: ``invalid_value`` naming ``file`` when there is none.
    """
    if not path.is_dir():
        if not path.is_file():
            raise InvalidMessage(ErrorCode.INVALID_VALUE, f"no such file or directory: {path}", field="file")
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and _EXTENSIONS.get(p.suffix.lower()) == fmt
                   and not p.name.startswith((".", "_")))
    if not files:
        raise InvalidMessage(ErrorCode.INVALID_VALUE, f"{path} holds no {fmt} files", field="file")
    return files


def source_digest(files: Sequence[Path], root: Path) -> str:
    """Ten hex digits of SHA-1 over the input (each file's path under ``root`` and bytes): the stable
    part of derived request ids. A single file's digest is its bytes' alone, as it always was."""
    digest = hashlib.sha1()
    for f in files:
        if len(files) > 1 or f != root:
            digest.update(str(f.relative_to(root)).encode() + b"\0")
        with f.open("rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:10]


def read_rows(files: Sequence[Path], fmt: str, columns: Columns) -> Iterator[tuple[int, RowBody]]:
    """Every row of the input as ``(number, body or error)``; blank JSON lines are skipped but
    keep their number.

    Raises:
        InvalidMessage: before the first row, a file that cannot be read as ``fmt`` or a named column
            it lacks (``field`` names the column); later, a file that breaks part-way (``field="file"``).
    """
    if fmt == "jsonl":
        if not columns.is_default():
            raise InvalidMessage(ErrorCode.INVALID_VALUE, "--id-col, --context-cols and --payload-cols apply to "
                                 "Parquet and CSV input; a JSON line is a whole request", field="format")
        yield from _json_rows(files)
        return
    number = 0
    for path in files:
        for rows in _table_batches(path, fmt, columns):
            for body in rows:
                number += 1
                yield number, body


def _json_rows(files: Sequence[Path]) -> Iterator[tuple[int, RowBody]]:
    number = 0
    for path in files:
        with path.open("rb") as f:
            for raw in f:
                number += 1
                if raw.strip():
                    yield number, parse_line(raw)


def parse_line(raw: bytes) -> RowBody:
    """One JSON line's request body, or why it holds none."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return InvalidMessage(ErrorCode.MALFORMED_JSON, f"line is not valid JSON: {exc}")
    if type(body) is not dict:
        return InvalidMessage(ErrorCode.NOT_AN_OBJECT, "line must hold a JSON object (one request)")
    return body


def _table_batches(path: Path, fmt: str, columns: Columns) -> Iterator[list[RowBody]]:
    pa = _pyarrow()
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq
            table = pq.ParquetFile(path)
            names = list(table.schema_arrow.names)
            batches: Any = table.iter_batches(batch_size=BATCH_ROWS)
        else:
            import pyarrow.csv as pacsv
            reader = pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 20))
            names = list(reader.schema.names)
            batches = reader
        mapping = _Mapping(names, columns, path, json_cells=fmt == "csv")
        for batch in batches:
            yield [mapping.body(row) for row in batch.to_pylist()]
    except (pa.ArrowException, OSError) as exc:
        raise InvalidMessage(ErrorCode.INVALID_VALUE, f"{path} cannot be read as {fmt}: {exc}", field="file") from None


class _Mapping:
    """One table's columns to request bodies, checked against the table's columns once."""

    def __init__(self, names: list[str], columns: Columns, path: Path, *, json_cells: bool = False) -> None:
        self.json_cells = json_cells
        present = set(names)
        wanted = [c for c in (columns.id_col, *(columns.context_cols or ()), *(columns.payload_cols or ()))
                  if c is not None]
        if missing := [c for c in wanted if c not in present]:
            raise InvalidMessage(ErrorCode.MISSING_FIELD,
                                 f"{path} has no column {missing[0]!r} (its columns: {', '.join(names)})",
                                 field=missing[0])
        self.id_col = columns.id_col or ("request_id" if "request_id" in present else None)
        self.context_cols = columns.context_cols
        self.payload_cols = columns.payload_cols
        taken = {c for c in (self.id_col, *(self.context_cols or ()), *(self.payload_cols or ())) if c}
        self.fields = [c for c in REQUEST_COLUMNS if c in present and c not in taken and c != "request_id"]
        if self.context_cols is not None and "context" in self.fields:
            self.fields.remove("context")
        if self.payload_cols is None and "payload" not in present:
            used = taken | set(self.fields)
            self.payload_cols = tuple(n for n in names if n not in used and n != "request_id")
        elif self.payload_cols is not None and "payload" in self.fields:
            self.fields.remove("payload")

    def body(self, row: dict[str, Any]) -> RowBody:
        try:
            body: dict[str, Any] = {}
            for name in self.fields:
                value = row[name]
                if value is not None:
                    body[name] = _object(value, name) if name in ("context", "payload") else _plain(value, name)
            if self.id_col is not None and (rid := row[self.id_col]) is not None:
                body["request_id"] = str(rid) if type(rid) is int else rid
            if self.context_cols is not None:
                body["context"] = {c: self._cell(row[c], c) for c in self.context_cols if row[c] is not None}
            if self.payload_cols is not None:
                body["payload"] = {c: self._cell(row[c], c) for c in self.payload_cols if row[c] is not None}
        except InvalidMessage as exc:
            return exc
        return body

    def _cell(self, value: Any, column: str) -> Any:
        # CSV has no lists or objects: a cell that holds a JSON array or object is one.
        if self.json_cells and isinstance(value, str) and value[:1] in ("[", "{"):
            return _object(value, column)
        return _plain(value, column)


def _object(value: Any, name: str) -> Any:
    """A ``context`` or ``payload`` column's value: a struct or map as a dict, JSON text parsed."""
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            raise InvalidMessage(ErrorCode.MALFORMED_JSON, f"column {name!r} holds text that is not JSON",
                                 field=name) from None
    if isinstance(value, list) and all(isinstance(kv, tuple) and len(kv) == 2 for kv in value):
        return {k: _plain(v, name) for k, v in value}  # an Arrow map comes out as (key, value) pairs
    return _plain(value, name)


def _plain(value: Any, column: str) -> Any:
    """A cell as JSON's types: times as ISO text, decimals as floats; structs and lists inside too."""
    if isinstance(value, dict):
        return {k: _plain(v, column) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, column) for v in value]
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        raise InvalidMessage(ErrorCode.WRONG_TYPE, f"column {column!r} is binary, which a request cannot hold; "
                             "cast it to text", field=column)
    return value


def release_memory_promptly() -> None:
    """Allocate pyarrow's buffers with the C library's malloc, not its default pool (mimalloc), and
    keep glibc from moving large buffers onto its heap.

    A backfill decodes a row group at a time and writes a part of results every few seconds.
    mimalloc keeps pages it once used: a 100,000-row backfill with Parquet output held about
    50 MB more with it than with malloc. glibc serves buffers over 128 KiB with ``mmap`` and
    returns them when freed, but raises that threshold to the largest buffer freed so far, after
    which such buffers come from the heap and stay there; a fixed threshold took the peak of a
    300,000-row backfill from 301 to 276 MB (docs/clients.md, "A million rows, measured").
    For the process that runs the backfill, not for a library caller's.
    """
    pa = _pyarrow()
    pa.set_memory_pool(pa.system_memory_pool())
    if platform.libc_ver()[0] == "glibc":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, 128 * 1024)  # a fixed threshold: no dynamic raise


_M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter number (``malloc.h``)."""


def _pyarrow() -> Any:
    try:
        import pyarrow
    except ImportError:
        raise InvalidMessage(ErrorCode.INVALID_VALUE, "reading Parquet or CSV needs pyarrow: "
                             "pip install 'scoreline[data]'", field="format") from None
    return pyarrow
