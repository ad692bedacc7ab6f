"""Encoding and decoding every message, and building dead letters."""

from __future__ import annotations

import base64
import dataclasses

import numpy as np
import orjson
import pytest
from schemas_examples import COMPARISONS, DEAD_LETTERS, FULL_REQUEST, OK_RESULT, REQUESTS, RESULTS, SHADOW_RESULTS

from schemas import (
    Comparison,
    DeadLetter,
    ErrorCode,
    ErrorInfo,
    InvalidMessage,
    Request,
    Result,
    ScorelineError,
    ShadowResult,
    dead_letter_for,
    decode_comparison,
    decode_dead_letter,
    decode_request,
    decode_result,
    decode_shadow_result,
    encode,
    encode_request,
    encode_result,
)


@pytest.mark.parametrize("request_", REQUESTS)
def test_request_round_trip(request_: Request) -> None:
    assert decode_request(encode_request(request_)) == request_
    assert encode_request(request_) == encode(request_)


@pytest.mark.parametrize("result", RESULTS)
def test_result_round_trip(result: Result) -> None:
    decoded = decode_result(encode(result))
    assert decoded == result
    assert decoded.error is None or type(decoded.error) is ErrorInfo


@pytest.mark.parametrize("letter", DEAD_LETTERS)
def test_dead_letter_round_trip(letter: DeadLetter) -> None:
    assert decode_dead_letter(encode(letter)) == letter


@pytest.mark.parametrize("shadow", SHADOW_RESULTS)
def test_shadow_result_round_trip(shadow: ShadowResult) -> None:
    decoded = decode_shadow_result(encode(shadow))
    assert decoded == shadow
    assert decoded.error is None or type(decoded.error) is ErrorInfo


@pytest.mark.parametrize("comparison", COMPARISONS)
def test_comparison_round_trip(comparison: Comparison) -> None:
    assert decode_comparison(encode(comparison)) == comparison


def test_decode_comparison_rejects_garbage() -> None:
    with pytest.raises(InvalidMessage) as info:
        decode_comparison(encode(SHADOW_RESULTS[0]))
    assert info.value.code == ErrorCode.MISSING_FIELD
    body = orjson.loads(encode(COMPARISONS[0]))
    with pytest.raises(InvalidMessage) as info:
        decode_comparison(orjson.dumps({**body, "matched": "yes"}))
    assert (info.value.code, info.value.field) == (ErrorCode.WRONG_TYPE, "matched")


@pytest.mark.parametrize("result", RESULTS)
def test_encode_result_is_encode_of_the_result(result: Result) -> None:
    """The worker's encoder writes the bytes ``encode(Result(...))`` would, defaults included."""
    fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(Result)}
    assert encode_result(**fields) == encode(result)
    required = {name: fields[name] for name in ("request_id", "objective", "status")}
    assert encode_result(**required) == encode(Result(**required))


def test_encode_keeps_none_fields() -> None:
    assert orjson.loads(encode(OK_RESULT))["error"] is None


def test_encode_accepts_numpy_values_from_workflows() -> None:
    scores, scored_ms = np.array([0.5, 0.25]), np.float32(1.5)
    result = Result("r", "o", "ok", result={"scores": scores}, timings_ms={"scored": scored_ms})
    body = orjson.loads(encode(result))
    assert body["result"] == {"scores": [0.5, 0.25]}
    assert body["timings_ms"] == {"scored": 1.5}


def test_messages_are_frozen() -> None:
    with pytest.raises(AttributeError):
        FULL_REQUEST.objective = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("data", "code", "field"),
    [
        (b"not json", ErrorCode.MALFORMED_JSON, None),
        (None, ErrorCode.MALFORMED_JSON, None),
        (b"[1, 2]", ErrorCode.NOT_AN_OBJECT, None),
        (b'{"request_id": "r", "objective": null}', ErrorCode.MISSING_FIELD, "status"),
        (b'{"request_id": "r", "objective": 1, "status": "ok"}', ErrorCode.WRONG_TYPE, "objective"),
        (b'{"request_id": "r", "objective": null, "status": "ok", "rules_version": true}',
         ErrorCode.WRONG_TYPE, "rules_version"),
        (b'{"request_id": "r", "objective": null, "status": "error", "error": "boom"}',
         ErrorCode.WRONG_TYPE, "error"),
        (b'{"request_id": "r", "objective": null, "status": "error", "error": {"code": "x"}}',
         ErrorCode.MISSING_FIELD, "error.message"),
    ],
)
def test_decode_result_rejects_garbage(data: bytes, code: str, field: str | None) -> None:
    with pytest.raises(InvalidMessage) as info:
        decode_result(data)
    assert (info.value.code, info.value.field) == (code, field)


def test_trusted_decoders_ignore_unknown_fields_and_accept_integral_floats() -> None:
    body = orjson.loads(encode(SHADOW_RESULTS[0]))
    body["added_in_v2"] = 1
    body["latency_ms"] = 3
    assert decode_shadow_result(orjson.dumps(body)).latency_ms == 3


def test_decode_dead_letter_and_shadow_result_reject_garbage() -> None:
    with pytest.raises(InvalidMessage):
        decode_dead_letter(b'{"code": "x"}')
    with pytest.raises(InvalidMessage):
        decode_shadow_result(encode(OK_RESULT))


def test_dead_letter_for_carries_reason_identity_and_original_bytes() -> None:
    original = b'{"request_id": "r-9", "client": "homepage", "context": []}\xff'
    exc = InvalidMessage(
        ErrorCode.WRONG_TYPE,
        "context must be an object, got list",
        field="context",
        partial={"request_id": "r-9", "client": "homepage"},
    )
    letter = dead_letter_for(
        exc,
        stage="router",
        source_topic="scoreline.requests",
        source_partition=2,
        source_offset=77,
        original=original,
        headers={"scoreline-client": "homepage"},
        ts_ms=1764000000000,
    )
    assert letter == DeadLetter(
        code="wrong_type",
        message="context must be an object, got list",
        field="context",
        request_id="r-9",
        client="homepage",
        stage="router",
        source_topic="scoreline.requests",
        source_partition=2,
        source_offset=77,
        ts_ms=1764000000000,
        original_b64=base64.b64encode(original).decode(),
        original_headers={"scoreline-client": "homepage"},
    )
    assert letter.original() == original
    assert decode_dead_letter(encode(letter)) == letter


def test_dead_letter_for_takes_kafka_header_pairs_and_any_scoreline_error() -> None:
    class Boom(ScorelineError):
        code = "workflow_error"

    letter = dead_letter_for(
        Boom("fact store down"),
        stage="worker",
        source_topic="scoreline.shard.s1",
        source_partition=0,
        source_offset=1,
        original=None,
        headers=[("scoreline-client", b"home"), ("bad", b"\xff"), ("empty", None)],
        ts_ms=1,
    )
    assert (letter.code, letter.message, letter.field) == ("workflow_error", "fact store down", None)
    assert (letter.request_id, letter.client) == (None, None)
    assert letter.original_headers == {"scoreline-client": "home", "bad": "\ufffd", "empty": ""}
    assert letter.original() == b""
