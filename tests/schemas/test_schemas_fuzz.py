"""decode_request on arbitrary input: only InvalidMessage escapes, and it agrees with the schema."""

from __future__ import annotations

from typing import Any

import jsonschema
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import InvalidMessage, Request, decode_request, json_schema

REQUEST_SCHEMA = jsonschema.Draft202012Validator(json_schema("request"))

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
VALID = {
    "request_id": "r-1",
    "objective": "title-ranking",
    "client": "demo",
    "reply_to": "scoreline.replies.demo",
    "context": {"user_id": "u-1"},
    "payload": {"titles": ["t-1"]},
    "deadline_ms": 1764000000000,
    "traffic": "backfill",
    "model": "title-ranker@v3",
}
odd_values = st.one_of(
    json_values,
    st.sampled_from(["live", "backfill", "test", "", "r" * 200, "r" * 201]),
    st.integers(min_value=-5, max_value=2**40),
    st.just({}),
)


@st.composite
def request_like(draw: st.DrawFn) -> dict[str, Any]:
    """A valid request with a few fields dropped or replaced by odd values.

    Mostly-valid bodies get past the early rules, so every field's rule is
    exercised rather than only the first one.
    """
    body: dict[str, Any] = {}
    for name, valid in VALID.items():
        fate = draw(st.integers(min_value=0, max_value=9))
        if fate < 7:
            body[name] = valid
        elif fate < 9:
            body[name] = draw(odd_values)
    if draw(st.booleans()):
        body["added_in_v2"] = draw(json_values)
    return body

def decodes(data: bytes) -> bool:
    try:
        return isinstance(decode_request(data), Request)
    except InvalidMessage:
        return False


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_invalid_message(data: bytes) -> None:
    decodes(data)


@settings(max_examples=200)
@given(json_values)
def test_arbitrary_json_values_raise_only_invalid_message(value: Any) -> None:
    decodes(orjson.dumps(value))


@settings(max_examples=300)
@given(request_like())
def test_decoder_accepts_exactly_what_the_schema_accepts(body: dict[str, Any]) -> None:
    integral_float = any(type(v) is float and v.is_integer() for v in body.values())
    accepted = decodes(orjson.dumps(body))
    if accepted or not integral_float:
        # JSON Schema counts 5.0 as an integer; the decoder holds
        # deadline_ms to a true integer, the only place the two differ.
        assert accepted == REQUEST_SCHEMA.is_valid(body), body
