"""Bytes to messages and back.

Requests come from producers we do not control, so :func:`decode_request`
checks every field of the contract by hand: it runs on the worker's hot path
once per message and must stay a single ``orjson.loads`` plus a handful of
type tests. Results, dead letters and shadow results are our own output;
their decoders (:mod:`schemas.decoders`) are built once per class from the
dataclass definitions and check types only; :func:`dead_letter_for` lives in
:mod:`schemas.dead_letter`. This module is the codec's public surface.

Decoders ignore top-level fields they do not know, so that a producer may
send fields added by a newer contract version to an older consumer. An
optional field that is ``null`` takes its default, as if it were absent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from schemas.dead_letter import dead_letter_for
from schemas.decoders import decode_comparison, decode_dead_letter, decode_result, decode_shadow_result
from schemas.errors import ErrorCode, InvalidMessage
from schemas.json_body import json_type, loads, partial
from schemas.messages import (
    TRAFFIC_CLASSES,
    Comparison,
    DeadLetter,
    ErrorInfo,
    Request,
    Result,
    ShadowResult,
    Traffic,
)

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "MAX_REQUEST_ID_LENGTH",
    "Message",
    "dead_letter_for",
    "decode_comparison",
    "decode_dead_letter",
    "decode_request",
    "decode_result",
    "decode_shadow_result",
    "encode",
    "encode_request",
    "encode_result",
    "request_from_dict",
]

DEFAULT_MAX_REQUEST_BYTES = 256 * 1024
"""The largest request body :func:`decode_request` parses, in bytes.

Room for a ranking request over a few thousand titles, yet small enough that
one misbehaving producer cannot make a worker parse megabytes per message.
"""

MAX_REQUEST_ID_LENGTH = 200
"The longest accepted ``request_id``, in characters; it is echoed in every result and key."

Message = Request | Result | DeadLetter | ShadowResult | Comparison | ErrorInfo
"Any message :func:`encode` accepts."

_TRAFFIC = frozenset(TRAFFIC_CLASSES)
# Workflows return numpy scalars and arrays in their results.
_ENCODE_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


# --- requests: untrusted input, checked field by field -----------------------


def decode_request(data: bytes, *, max_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> Request:
    """Decode and validate one request body.

    Top-level fields the contract does not name are ignored, so producers
    may already send fields of a newer contract version.

    Args:
        data: the Kafka record value (UTF-8 JSON); None for a tombstone.
        max_bytes: bodies longer than this are rejected without being parsed.

    Raises:
        InvalidMessage: with the :class:`~schemas.errors.ErrorCode` of the
            first broken rule, the field it concerns, and in ``partial`` the
            identifying fields that were readable.
    """
    if data is None:
        raise InvalidMessage(ErrorCode.MALFORMED_JSON, "request has no body")
    size = len(data)
    if size > max_bytes:
        raise InvalidMessage(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"request is {size} bytes; the limit is {max_bytes}",
        )
    body = loads(data, "request")
    if type(body) is not dict:
        raise InvalidMessage(
            ErrorCode.NOT_AN_OBJECT, f"request must be a JSON object, got {json_type(body)}"
        )
    return _request_from_body(body)


def request_from_dict(d: Mapping[str, Any]) -> Request:
    """Validate an already-parsed request body, exactly as :func:`decode_request` does.

    Raises:
        InvalidMessage: as :func:`decode_request`.
    """
    if type(d) is not dict:
        if not isinstance(d, Mapping):
            raise InvalidMessage(
                ErrorCode.NOT_AN_OBJECT, f"request must be a JSON object, got {json_type(d)}"
            )
        d = dict(d)
    return _request_from_body(d)


def encode_request(r: Request) -> bytes:
    """Encode a request as UTF-8 JSON, every field present."""
    return orjson.dumps(r, option=_ENCODE_OPTIONS)


def _request_from_body(body: dict[str, Any]) -> Request:
    # Each test is the whole rule for the valid case; only a failing field
    # pays for working out which rule it broke and building ``partial``.
    get = body.get
    request_id = get("request_id")
    if type(request_id) is not str or not 0 < len(request_id) <= MAX_REQUEST_ID_LENGTH:
        raise _rejected(body, "request_id")
    objective = get("objective")
    if type(objective) is not str:
        raise _rejected(body, "objective")
    client = get("client")
    if type(client) is not str:
        raise _rejected(body, "client")
    reply_to = get("reply_to")
    if type(reply_to) is not str:
        raise _rejected(body, "reply_to")
    context = get("context")
    if type(context) is not dict:
        raise _rejected(body, "context")
    payload = get("payload")
    if payload is None:
        payload = {}
    elif type(payload) is not dict:
        raise _rejected(body, "payload")
    deadline_ms = get("deadline_ms")
    # type() rather than isinstance(): JSON true must not pass as the integer 1.
    if deadline_ms is not None and (type(deadline_ms) is not int or deadline_ms < 0):
        raise _rejected(body, "deadline_ms")
    traffic = get("traffic")
    if traffic is None:
        traffic = Traffic.LIVE
    elif type(traffic) is not str or traffic not in _TRAFFIC:
        raise _rejected(body, "traffic")
    model = get("model")
    if model is not None and type(model) is not str:
        raise _rejected(body, "model")
    return Request(request_id, objective, client, reply_to, context, payload, deadline_ms, traffic, model)


def _rejected(body: dict[str, Any], name: str) -> InvalidMessage:
    """Explain why field ``name`` of ``body`` failed its check in :func:`_request_from_body`."""
    value = body.get(name)
    got = json_type(value)
    code, message = ErrorCode.WRONG_TYPE, f"{name} must be a string, got {got}"
    if name in ("request_id", "objective", "client", "reply_to", "context") and value is None:
        code = ErrorCode.MISSING_FIELD
        message = f"{name} is required, got null" if name in body else f"{name} is required"
    elif name == "request_id" and type(value) is str:
        code = ErrorCode.INVALID_VALUE
        if value:
            message = f"request_id is {len(value)} characters long; the limit is {MAX_REQUEST_ID_LENGTH}"
        else:
            message = "request_id must not be empty"
    elif name in ("context", "payload"):
        message = f"{name} must be an object, got {got}"
    elif name == "deadline_ms":
        if type(value) is bool:
            # The contract files a boolean deadline under invalid_value: it is
            # an integer to Python, so the type is right and the value is not.
            code, message = ErrorCode.INVALID_VALUE, "deadline_ms must be epoch milliseconds, got a boolean"
        elif type(value) is int:
            code, message = ErrorCode.INVALID_VALUE, f"deadline_ms must not be negative, got {value}"
        else:
            message = f"deadline_ms must be an integer (epoch milliseconds), got {got}"
    elif name == "traffic" and type(value) is str:
        code = ErrorCode.INVALID_VALUE
        message = f"traffic must be one of {', '.join(TRAFFIC_CLASSES)}, got {_excerpt(value)}"
    return InvalidMessage(code, message, field=name, partial=partial(body))


def encode(msg: Message) -> bytes:
    """Encode any message as UTF-8 JSON, every field present (None as null).

    Raises:
        TypeError: a field holds a value JSON cannot represent (a programming error).
    """
    return orjson.dumps(msg, option=_ENCODE_OPTIONS)



def encode_result(request_id: str, objective: str | None, status: str, *, model: str | None = None,
                  cell: str | None = None, rules_version: int | None = None, shard: str | None = None,
                  result: dict[str, Any] | None = None, error: ErrorInfo | None = None,
                  timings_ms: dict[str, float] | None = None, traffic: str = Traffic.LIVE) -> bytes:
    """``encode(Result(...))`` of these fields, the same bytes, without building the :class:`Result`.

    The worker encodes one result per request and never reads it back: a frozen dataclass costs
    about 1 µs to build and orjson serialises a dict faster than a dataclass (docs/performance.md).
    The keys are the dataclass's fields in order, which a test holds to.
    """
    return orjson.dumps({"request_id": request_id, "objective": objective, "status": status, "model": model,
                         "cell": cell, "rules_version": rules_version, "shard": shard, "result": result,
                         "error": error, "timings_ms": {} if timings_ms is None else timings_ms,
                         "traffic": traffic}, option=_ENCODE_OPTIONS)


def _excerpt(value: str, limit: int = 40) -> str:
    # Echo enough of a bad value to recognise it, never a whole oversized field.
    return repr(value if len(value) <= limit else value[:limit] + "...")

