"""A backfill's files: input lines to requests with stable ids, results to output lines, and where a resume starts."""

from __future__ import annotations

import array
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from schemas import codec
from schemas.errors import ErrorCode, InvalidMessage
from schemas.messages import ErrorInfo, Request, Result, Status, Traffic
from streams.client.backfill_tables import RowBody, parse_line
from streams.topics import TopicLayout

__all__ = ["Line", "RequestIds", "file_digest", "output_line", "prepare_lines", "prepare_rows", "read_done_lines",
           "rejected_result"]



@dataclass(frozen=True, slots=True)
class Line:
    """One input line, ready to publish or already rejected."""

    number: int
    "1-based line number in the file."
    request_id: str
    "The request id it is published under (stable across runs of the same file)."
    request: Request | None
    "The request, or None when the line was rejected."
    error: ErrorInfo | None = None
    "Why the line was rejected (its output line carries this as an error result)."


def file_digest(path: Path) -> str:
    """The first ten hex digits of the file's SHA-1: the stable part of its request ids."""
    digest = hashlib.sha1()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:10]


class RequestIds:
    """Every row's request id, kept as a 64-bit hash beside its row number: 16 bytes a row, so a
    backfill of millions of rows can recognise each result (and each id used twice) without a
    dict of every id. Hashes are Python's own, stable within the process that made them."""

    def __init__(self) -> None:
        self._hashes = array.array("q")
        self._rows = array.array("q")
        self._sorted: np.ndarray | None = None
        self._sorted_rows: np.ndarray | None = None
        self._first_use: dict[int, int] = {}

    def add(self, request_id: str, row: int) -> None:
        """Note ``row``'s id (rows in increasing order)."""
        self._hashes.append(hash(request_id))
        self._rows.append(row)

    def freeze(self) -> None:
        """Sort for lookups and find the rows whose id an earlier row already has."""
        hashes = np.frombuffer(self._hashes, dtype=np.int64) if self._hashes else np.zeros(0, np.int64)
        rows = np.frombuffer(self._rows, dtype=np.int64) if self._rows else np.zeros(0, np.int64)
        order = np.lexsort((rows, hashes))
        self._sorted, self._sorted_rows = hashes[order], rows[order]
        self._hashes, self._rows = array.array("q"), array.array("q")
        repeated = np.flatnonzero(self._sorted[1:] == self._sorted[:-1]) + 1
        for index in repeated.tolist():
            first = int(np.searchsorted(self._sorted, self._sorted[index]))
            self._first_use[int(self._sorted_rows[index])] = int(self._sorted_rows[first])

    def __len__(self) -> int:
        return len(self._sorted) if self._sorted is not None else len(self._hashes)

    def row_of(self, request_id: str) -> int | None:
        """The (first) row published under ``request_id``; None for an id of no row."""
        assert self._sorted is not None and self._sorted_rows is not None, "freeze() first"
        h = hash(request_id)
        index = int(np.searchsorted(self._sorted, h))
        if index < len(self._sorted) and self._sorted[index] == h:
            return int(self._sorted_rows[index])
        return None

    def first_use(self, row: int) -> int | None:
        """The earlier row that has ``row``'s request id, if any (None for every row before ``freeze``)."""
        return self._first_use.get(row)

    def repeated_rows(self) -> list[int]:
        """The rows whose id an earlier row already has (known after ``freeze``)."""
        return list(self._first_use)


def prepare_rows(rows: Iterable[tuple[int, RowBody]], *, digest: str, objective: str, client: str,
                 layout: TopicLayout, ids: RequestIds | None = None) -> Iterator[Line]:
    """Turn request bodies into requests: ids, client, ``reply_to`` and objective filled in,
    ``traffic`` forced to backfill. A frozen ``ids`` says which rows reuse an earlier row's id
    (one not frozen yet says none does: a first pass that is building it); without it they are
    found as the rows go by, in a dict of every id.
    """
    seen: dict[str, int] = {}
    for number, body in rows:
        derived = f"bf-{digest}-{number}"
        try:
            if isinstance(body, InvalidMessage):
                raise body
            request = _request_of(body, derived, objective, client, layout)
            first = ids.first_use(number) if ids is not None else seen.setdefault(request.request_id, number)
            if first is not None and first != number:
                raise InvalidMessage(ErrorCode.INVALID_VALUE,
                                     f"request_id {request.request_id!r} is already used by row {first}",
                                     field="request_id")
        except InvalidMessage as exc:
            yield Line(number, derived, None, exc.to_error_info())
            continue
        yield Line(number, request.request_id, request)


def prepare_lines(raw_lines: Iterable[bytes], *, digest: str, objective: str, client: str,
                  layout: TopicLayout) -> Iterator[Line]:
    """:func:`prepare_rows` over raw JSON Lines. Blank lines are skipped (they hold no request)
    but keep their number, so line numbers always match the file.
    """
    rows = ((n, parse_line(raw)) for n, raw in enumerate(raw_lines, start=1) if raw.strip())
    return prepare_rows(rows, digest=digest, objective=objective, client=client, layout=layout)


def _request_of(body: dict[str, Any], derived_id: str, objective: str, client: str, layout: TopicLayout) -> Request:
    if body.get("objective") is None:
        body["objective"] = objective
    elif body["objective"] != objective:
        raise InvalidMessage(ErrorCode.INVALID_VALUE,
                             f"objective is {body['objective']!r} but this backfill is for {objective!r}",
                             field="objective")
    if body.get("request_id") is None:
        body["request_id"] = derived_id
    if body.get("client") is None:
        body["client"] = client
    if body.get("reply_to") is None and type(body["client"]) is str:
        body["reply_to"] = layout.replies(body["client"])
    body["traffic"] = Traffic.BACKFILL
    return codec.request_from_dict(body)


def rejected_result(line: Line, objective: str) -> Result:
    """The output for a line that was never published: an error result naming the fault."""
    return Result(request_id=line.request_id, objective=objective, status=Status.ERROR, error=line.error,
                  traffic=Traffic.BACKFILL)


def output_line(number: int, result: Result) -> bytes:
    """One line of the ``--out`` file: ``line`` first, then the result message."""
    return orjson.dumps({"line": number, **orjson.loads(codec.encode(result))}) + b"\n"


def read_done_lines(out: Path) -> set[int]:
    """The line numbers that already have output in ``out``.

    A last line cut short by a crash is removed from the file (its input line is then
    published again); any other unreadable line means ``out`` is not a backfill output.

    Raises:
        InvalidMessage: ``invalid_value`` naming ``out``.
    """
    if not out.exists():
        return set()
    data = out.read_bytes()
    complete = data.rfind(b"\n") + 1
    if complete < len(data):
        with out.open("r+b") as f:
            f.truncate(complete)
    done: set[int] = set()
    for index, raw in enumerate(data[:complete].splitlines(), start=1):
        try:
            number = orjson.loads(raw)["line"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise InvalidMessage(ErrorCode.INVALID_VALUE,
                                 f"{out} line {index} is not a backfill output line; refusing to resume into it",
                                 field="out") from None
        done.add(number)
    return done
