"""A backfill's files: input lines to requests with stable ids, results to output lines, and where a resume starts."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from schemas import codec
from schemas.errors import ErrorCode, InvalidMessage
from schemas.messages import ErrorInfo, Request, Result, Status, Traffic
from streams.topics import TopicLayout

__all__ = ["Line", "file_digest", "output_line", "prepare_lines", "read_done_lines", "rejected_result"]



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


def prepare_lines(raw_lines: Iterator[bytes], *, digest: str, objective: str, client: str,
                  layout: TopicLayout) -> Iterator[Line]:
    """Turn raw JSON Lines into requests: ids, client, ``reply_to`` and objective filled in,
    ``traffic`` forced to backfill. Blank lines are skipped (they hold no request) but keep
    their number, so line numbers always match the file.
    """
    seen: dict[str, int] = {}
    for number, raw in enumerate(raw_lines, start=1):
        if not raw.strip():
            continue
        derived = f"bf-{digest}-{number}"
        try:
            request = _request_of(raw, derived, objective, client, layout)
            if (first := seen.setdefault(request.request_id, number)) != number:
                raise InvalidMessage(ErrorCode.INVALID_VALUE,
                                     f"request_id {request.request_id!r} is already used by line {first}",
                                     field="request_id")
        except InvalidMessage as exc:
            yield Line(number, derived, None, exc.to_error_info())
            continue
        yield Line(number, request.request_id, request)


def _request_of(raw: bytes, derived_id: str, objective: str, client: str, layout: TopicLayout) -> Request:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidMessage(ErrorCode.MALFORMED_JSON, f"line is not valid JSON: {exc}") from None
    if type(body) is not dict:
        raise InvalidMessage(ErrorCode.NOT_AN_OBJECT, "line must hold a JSON object (one request)")
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
