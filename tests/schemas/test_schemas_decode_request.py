"""decode_request: the happy paths and every rejection, with the field it names."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from schemas import (
    DEFAULT_MAX_REQUEST_BYTES,
    ErrorCode,
    InvalidMessage,
    Request,
    decode_request,
    request_from_dict,
)

FULL = {
    "request_id": "8f0c",
    "objective": "title-ranking",
    "client": "homepage",
    "reply_to": "scoreline.replies.homepage",
    "context": {"user_id": "u-123", "country": "US", "device": "tv", "surface": "home"},
    "payload": {"titles": ["t-1", "t-2", "t-3"]},
    "deadline_ms": 1764000000000,
    "traffic": "backfill",
    "model": "title-ranker@v3",
}
MINIMAL = {key: FULL[key] for key in ("request_id", "objective", "client", "reply_to", "context")}


def body(**changes: Any) -> bytes:
    """FULL with ``changes`` applied; a value of ``...`` removes the field."""
    d = {**FULL, **changes}
    return orjson.dumps({k: v for k, v in d.items() if v is not ...})


def rejection(data: bytes, **kwargs: Any) -> InvalidMessage:
    with pytest.raises(InvalidMessage) as info:
        decode_request(data, **kwargs)
    return info.value


def test_decodes_every_field() -> None:
    assert decode_request(orjson.dumps(FULL)) == Request(**FULL)


def test_minimal_request_takes_the_defaults() -> None:
    r = decode_request(orjson.dumps(MINIMAL))
    assert (r.payload, r.deadline_ms, r.traffic, r.model) == ({}, None, "live", None)


def test_null_optional_fields_take_the_defaults() -> None:
    r = decode_request(body(payload=None, deadline_ms=None, traffic=None, model=None))
    assert (r.payload, r.deadline_ms, r.traffic, r.model) == ({}, None, "live", None)


def test_unknown_fields_are_ignored() -> None:
    assert decode_request(body(added_in_v2={"x": 1})) == Request(**FULL)


def test_accepts_bytearray_and_memoryview() -> None:
    data = orjson.dumps(FULL)
    assert decode_request(bytearray(data)) == decode_request(memoryview(data)) == Request(**FULL)


def test_request_id_at_the_length_limit_is_accepted() -> None:
    assert decode_request(body(request_id="r" * 200)).request_id == "r" * 200


@pytest.mark.parametrize("traffic", ["live", "backfill", "test"])
def test_every_traffic_class_is_accepted(traffic: str) -> None:
    assert decode_request(body(traffic=traffic)).traffic == traffic


@pytest.mark.parametrize(
    ("changes", "code", "field"),
    [
        ({"request_id": ...}, ErrorCode.MISSING_FIELD, "request_id"),
        ({"objective": ...}, ErrorCode.MISSING_FIELD, "objective"),
        ({"client": ...}, ErrorCode.MISSING_FIELD, "client"),
        ({"reply_to": ...}, ErrorCode.MISSING_FIELD, "reply_to"),
        ({"context": ...}, ErrorCode.MISSING_FIELD, "context"),
        ({"objective": None}, ErrorCode.MISSING_FIELD, "objective"),
        ({"request_id": 42}, ErrorCode.WRONG_TYPE, "request_id"),
        ({"objective": ["title-ranking"]}, ErrorCode.WRONG_TYPE, "objective"),
        ({"client": True}, ErrorCode.WRONG_TYPE, "client"),
        ({"reply_to": {"topic": "x"}}, ErrorCode.WRONG_TYPE, "reply_to"),
        ({"context": ["u-1"]}, ErrorCode.WRONG_TYPE, "context"),
        ({"context": "u-1"}, ErrorCode.WRONG_TYPE, "context"),
        ({"payload": ["t-1"]}, ErrorCode.WRONG_TYPE, "payload"),
        ({"deadline_ms": "1764000000000"}, ErrorCode.WRONG_TYPE, "deadline_ms"),
        ({"deadline_ms": 1.5}, ErrorCode.WRONG_TYPE, "deadline_ms"),
        ({"traffic": 1}, ErrorCode.WRONG_TYPE, "traffic"),
        ({"model": 3}, ErrorCode.WRONG_TYPE, "model"),
        ({"request_id": ""}, ErrorCode.INVALID_VALUE, "request_id"),
        ({"request_id": "r" * 201}, ErrorCode.INVALID_VALUE, "request_id"),
        ({"traffic": "batch"}, ErrorCode.INVALID_VALUE, "traffic"),
        ({"traffic": "LIVE"}, ErrorCode.INVALID_VALUE, "traffic"),
        ({"deadline_ms": -1}, ErrorCode.INVALID_VALUE, "deadline_ms"),
        ({"deadline_ms": True}, ErrorCode.INVALID_VALUE, "deadline_ms"),
    ],
)
def test_rejection_names_code_and_field(changes: dict[str, Any], code: str, field: str) -> None:
    exc = rejection(body(**changes))
    assert (exc.code, exc.field) == (code, field)
    assert field in exc.message
    assert exc.to_error_info().code == code
    assert request_from_dict(orjson.loads(body())) == Request(**FULL)
    with pytest.raises(InvalidMessage) as same:
        request_from_dict(orjson.loads(body(**changes)))
    assert (same.value.code, same.value.field) == (code, field)


def test_wrong_type_message_says_what_was_expected_and_got() -> None:
    assert rejection(body(context=[1])).message == "context must be an object, got list"


def test_first_broken_rule_in_field_order_is_reported() -> None:
    exc = rejection(body(objective=..., context=[], traffic="nope"))
    assert exc.field == "objective"


@pytest.mark.parametrize(
    "data",
    [b"", b"{", b"{'a': 1}", b'{"request_id": "a",}', b"NaN", b"\xff\xfe{}", b'{"request_id": "\xff"}'],
)
def test_unparseable_body_is_malformed_json(data: bytes) -> None:
    exc = rejection(data)
    assert (exc.code, exc.field, exc.partial) == (ErrorCode.MALFORMED_JSON, None, {})


def test_invalid_utf8_is_malformed_json() -> None:
    data = body(client="home\u00e9page").replace("\u00e9".encode(), b"\xe9")
    assert rejection(data).code == ErrorCode.MALFORMED_JSON


def test_tombstone_is_malformed_json() -> None:
    assert rejection(None).code == ErrorCode.MALFORMED_JSON  # type: ignore[arg-type]


@pytest.mark.parametrize("data", [b"[]", b"1", b'"request"', b"null", b"true"])
def test_non_object_body_is_rejected(data: bytes) -> None:
    assert rejection(data).code == ErrorCode.NOT_AN_OBJECT


def test_request_from_dict_rejects_non_mappings() -> None:
    with pytest.raises(InvalidMessage) as info:
        request_from_dict([("request_id", "r")])  # type: ignore[arg-type]
    assert info.value.code == ErrorCode.NOT_AN_OBJECT


def test_oversized_body_is_rejected_before_parsing() -> None:
    # Not JSON at all: a parse would say malformed_json, so the size check came first.
    exc = rejection(b"x" * (DEFAULT_MAX_REQUEST_BYTES + 1))
    assert exc.code == ErrorCode.PAYLOAD_TOO_LARGE
    assert str(DEFAULT_MAX_REQUEST_BYTES) in exc.message


def test_max_bytes_is_configurable_and_inclusive() -> None:
    data = orjson.dumps(MINIMAL)
    assert decode_request(data, max_bytes=len(data)) == Request(**MINIMAL)
    assert rejection(data, max_bytes=len(data) - 1).code == ErrorCode.PAYLOAD_TOO_LARGE


def test_partial_holds_the_readable_identifying_fields() -> None:
    exc = rejection(body(context="nope", objective=7, traffic="backfill"))
    assert exc.partial == {
        "request_id": "8f0c",
        "client": "homepage",
        "reply_to": "scoreline.replies.homepage",
        "traffic": "backfill",
    }


def test_partial_keeps_strings_even_when_they_are_the_invalid_field() -> None:
    exc = rejection(body(traffic="batch", request_id=""))
    assert exc.field == "request_id"
    assert exc.partial["traffic"] == "batch"
    assert exc.partial["request_id"] == ""


def test_long_bad_value_is_not_echoed_whole() -> None:
    exc = rejection(body(traffic="x" * 10_000))
    assert len(exc.message) < 200
