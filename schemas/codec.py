"""Bytes to messages and back.

Requests come from producers we do not control, so :func:`decode_request`
checks every field of the contract by hand: it runs on the worker's hot path
once per message and must stay a single ``orjson.loads`` plus a handful of
type tests. Results, dead letters and shadow results are our own output;
their decoders are built once per class from the dataclass definitions and
check types only.

Decoders ignore top-level fields they do not know, so that a producer may
send fields added by a newer contract version to an older consumer. An
optional field that is ``null`` takes its default, as if it were absent.
"""

from __future__ import annotations

import base64
import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Generic, TypeVar

import orjson

from schemas.errors import ErrorCode, InvalidMessage, ScorelineError
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
_PARTIAL_FIELDS = ("request_id", "client", "reply_to", "objective", "traffic")
# Workflows return numpy scalars and arrays in their results.
_ENCODE_OPTIONS = orjson.OPT_SERIALIZE_NUMPY

_JSON_TYPE_NAMES: dict[type, str] = {
    dict: "object",
    list: "list",
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


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
    body = _loads(data, "request")
    if type(body) is not dict:
        raise InvalidMessage(
            ErrorCode.NOT_AN_OBJECT, f"request must be a JSON object, got {_json_type(body)}"
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
                ErrorCode.NOT_AN_OBJECT, f"request must be a JSON object, got {_json_type(d)}"
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
    got = _json_type(value)
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
    return InvalidMessage(code, message, field=name, partial=_partial(body))


def _partial(body: Mapping[str, Any]) -> dict[str, str]:
    return {name: body[name] for name in _PARTIAL_FIELDS if type(body.get(name)) is str}


# --- our own messages: trusted output, type-checked only -----------------------

_M = TypeVar("_M")


class _Decoder(Generic[_M]):
    """Rebuilds one message class from a parsed JSON object.

    The field rules are read from the dataclass once, at import, so a new
    field with a default needs no change here.
    """

    __slots__ = ("_cls", "_prefix", "_rules", "_what")

    def __init__(self, cls: type[_M], prefix: str = "") -> None:
        hints = typing.get_type_hints(cls)
        self._cls = cls
        self._prefix = prefix
        self._what = prefix.rstrip(".") or cls.__name__
        self._rules = tuple(
            (
                f.name,
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
                *_accepted_types(hints[f.name], f"{prefix}{f.name}."),
            )
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        )

    def __call__(self, body: Any) -> _M:
        what = self._what
        if type(body) is not dict:
            raise InvalidMessage(
                ErrorCode.NOT_AN_OBJECT,
                f"{what} must be a JSON object, got {_json_type(body)}",
                field=self._prefix.rstrip(".") or None,
            )
        kwargs: dict[str, Any] = {}
        for name, required, accepted, nested in self._rules:
            if name not in body:
                if required:
                    raise InvalidMessage(
                        ErrorCode.MISSING_FIELD,
                        f"{self._prefix}{name} is required",
                        field=self._prefix + name,
                        partial=_partial(body),
                    )
                continue
            value = body[name]
            if nested is not None and type(value) is dict:
                value = nested(value)
            elif accepted is not None and type(value) not in accepted:
                expected = " or ".join(sorted({_JSON_TYPE_NAMES.get(t, t.__name__) for t in accepted}))
                raise InvalidMessage(
                    ErrorCode.WRONG_TYPE,
                    f"{self._prefix}{name} must be of type {expected}, got {_json_type(value)}",
                    field=self._prefix + name,
                    partial=_partial(body),
                )
            kwargs[name] = value
        return self._cls(**kwargs)


def _accepted_types(hint: Any, prefix: str) -> tuple[frozenset[type] | None, _Decoder[Any] | None]:
    """Return the exact JSON value types a field accepts (None: any) and its nested decoder."""
    members = typing.get_args(hint) if typing.get_origin(hint) in (types.UnionType, typing.Union) else (hint,)
    accepted: set[type] = set()
    nested: _Decoder[Any] | None = None
    for member in members:
        if member is Any:
            return None, None
        if dataclasses.is_dataclass(member):
            nested = _Decoder(member, prefix)  # type: ignore[arg-type]
            accepted.add(dict)
            continue
        base = typing.get_origin(member) or member
        accepted.add(base)
        if base is float:
            # JSON does not tell 3 from 3.0, and other producers write either.
            accepted.add(int)
    return frozenset(accepted), nested


_decode_result_body: _Decoder[Result] = _Decoder(Result)
_decode_dead_letter_body: _Decoder[DeadLetter] = _Decoder(DeadLetter)
_decode_shadow_result_body: _Decoder[ShadowResult] = _Decoder(ShadowResult)
_decode_comparison_body: _Decoder[Comparison] = _Decoder(Comparison)


def decode_result(data: bytes) -> Result:
    """Decode a result, rebuilding its nested :class:`~schemas.messages.ErrorInfo`.

    Raises:
        InvalidMessage: the bytes are not a result.
    """
    return _decode_result_body(_loads(data, "result"))


def decode_dead_letter(data: bytes) -> DeadLetter:
    """Decode a dead-letter record.

    Raises:
        InvalidMessage: the bytes are not a dead-letter record.
    """
    return _decode_dead_letter_body(_loads(data, "dead letter"))


def decode_shadow_result(data: bytes) -> ShadowResult:
    """Decode a shadow result, rebuilding its nested :class:`~schemas.messages.ErrorInfo`.

    Raises:
        InvalidMessage: the bytes are not a shadow result.
    """
    return _decode_shadow_result_body(_loads(data, "shadow result"))


def decode_comparison(data: bytes) -> Comparison:
    """Decode a shadow comparison record.

    Raises:
        InvalidMessage: the bytes are not a comparison.
    """
    return _decode_comparison_body(_loads(data, "comparison"))


# --- shared ----------------------------------------------------------------------


def encode(msg: Message) -> bytes:
    """Encode any message as UTF-8 JSON, every field present (None as null).

    Raises:
        TypeError: a field holds a value JSON cannot represent (a programming error).
    """
    return orjson.dumps(msg, option=_ENCODE_OPTIONS)


def dead_letter_for(
    exc: ScorelineError,
    *,
    stage: str,
    source_topic: str,
    source_partition: int,
    source_offset: int,
    original: bytes | None,
    headers: Mapping[str, str | bytes] | Iterable[tuple[str, bytes | None]],
    ts_ms: int,
) -> DeadLetter:
    """Build the dead-letter record for an input rejected with ``exc``.

    Args:
        exc: why the input was rejected; usually an :class:`InvalidMessage`,
            whose ``field`` and ``partial`` are carried over.
        stage: one of :class:`~schemas.messages.Stage`.
        source_topic: the topic the input was read from.
        source_partition: its partition.
        source_offset: its offset.
        original: the input's value bytes (None for a tombstone).
        headers: the input's headers, as a mapping or as Kafka's
            ``(name, bytes)`` pairs; bytes are decoded as UTF-8.
        ts_ms: epoch milliseconds to stamp the record with.
    """
    partial: Mapping[str, Any] = getattr(exc, "partial", None) or {}
    request_id = partial.get("request_id")
    client = partial.get("client")
    return DeadLetter(
        code=exc.code,
        message=getattr(exc, "message", None) or str(exc),
        field=getattr(exc, "field", None),
        request_id=request_id if type(request_id) is str else None,
        client=client if type(client) is str else None,
        stage=stage,
        source_topic=source_topic,
        source_partition=source_partition,
        source_offset=source_offset,
        ts_ms=ts_ms,
        original_b64=base64.b64encode(original or b"").decode("ascii"),
        original_headers=_header_strings(headers),
    )


def _header_strings(
    headers: Mapping[str, str | bytes] | Iterable[tuple[str, bytes | None]],
) -> dict[str, str]:
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, str] = {}
    for name, value in pairs:
        if value is None:
            value = ""
        elif not isinstance(value, str):
            # A poison record's headers may be as broken as its body; keep
            # what can be read rather than lose the record.
            value = bytes(value).decode("utf-8", errors="replace")
        out[name] = value
    return out


def _loads(data: bytes | None, what: str) -> Any:
    if data is None:
        raise InvalidMessage(ErrorCode.MALFORMED_JSON, f"{what} has no body")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidMessage(ErrorCode.MALFORMED_JSON, f"{what} is not valid UTF-8 JSON: {exc}") from exc


def _json_type(value: Any) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _excerpt(value: str, limit: int = 40) -> str:
    # Echo enough of a bad value to recognise it, never a whole oversized field.
    return repr(value if len(value) <= limit else value[:limit] + "...")
