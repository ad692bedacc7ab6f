"""The JSON Schema documents and the message classes describe the same contract."""

from __future__ import annotations

import dataclasses
from typing import Any

import jsonschema
import orjson
import pytest
from schemas_examples import COMPARISONS, DEAD_LETTERS, REQUESTS, RESULTS, SHADOW_RESULTS

from schemas import (
    SCHEMA_NAMES,
    SLICE_FIELDS,
    TRAFFIC_CLASSES,
    Comparison,
    DeadLetter,
    ErrorInfo,
    InvalidMessage,
    Request,
    Result,
    Role,
    ShadowResult,
    Stage,
    Status,
    Unmatched,
    decode_request,
    encode,
    json_schema,
)

CLASSES: dict[str, type] = {
    "request": Request,
    "result": Result,
    "dead_letter": DeadLetter,
    "shadow_result": ShadowResult,
    "comparison": Comparison,
}
EXAMPLES: dict[str, list[Any]] = {
    "request": REQUESTS,
    "result": RESULTS,
    "dead_letter": DEAD_LETTERS,
    "shadow_result": SHADOW_RESULTS,
    "comparison": COMPARISONS,
}


def validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json_schema(name))


def required_fields(cls: type) -> set[str]:
    return {
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }


def constants(cls: type) -> set[str]:
    return {v for k, v in vars(cls).items() if k.isupper()}


def test_there_is_one_schema_per_message() -> None:
    assert set(SCHEMA_NAMES) == set(CLASSES)


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_schema_is_a_valid_draft_2020_12_document(name: str) -> None:
    schema = json_schema(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith(f"/{name}.schema.json")
    assert schema["title"] == CLASSES[name].__name__
    assert schema["description"]


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_properties_are_the_dataclass_fields(name: str) -> None:
    schema = json_schema(name)
    assert list(schema["properties"]) == [f.name for f in dataclasses.fields(CLASSES[name])]
    assert set(schema["required"]) == required_fields(CLASSES[name])
    assert all(prop.get("description") for prop in schema["properties"].values())


@pytest.mark.parametrize("name", ["result", "shadow_result"])
def test_error_info_definition_matches_its_class(name: str) -> None:
    error_info = json_schema(name)["$defs"]["error_info"]
    assert list(error_info["properties"]) == [f.name for f in dataclasses.fields(ErrorInfo)]
    assert set(error_info["required"]) == required_fields(ErrorInfo)


def test_enums_match_the_constants() -> None:
    request, result = json_schema("request"), json_schema("result")
    assert set(request["properties"]["traffic"]["enum"]) - {None} == set(TRAFFIC_CLASSES)
    assert set(result["properties"]["traffic"]["enum"]) == set(TRAFFIC_CLASSES)
    assert set(result["properties"]["status"]["enum"]) == constants(Status)
    assert set(json_schema("dead_letter")["properties"]["stage"]["enum"]) == constants(Stage)
    shadow = json_schema("shadow_result")["properties"]
    assert set(shadow["role"]["enum"]) == constants(Role)
    assert list(shadow["context"]["properties"]) == list(SLICE_FIELDS)
    comparison = json_schema("comparison")["properties"]
    assert set(comparison["reason"]["enum"]) - {None} == constants(Unmatched)
    assert set(comparison["primary_status"]["enum"]) - {None} == constants(Status)
    assert set(comparison["shadow_status"]["enum"]) - {None} == constants(Status)
    assert set(comparison["traffic"]["enum"]) == set(TRAFFIC_CLASSES)
    assert list(comparison["context"]["properties"]) == list(SLICE_FIELDS)


def test_comparison_agreement_documents_every_measure() -> None:
    from workflows.agreement import agreement

    documented = set(json_schema("comparison")["properties"]["agreement"]["properties"])
    ranking = agreement({"ranking": [{"title": "a", "score": 1}]}, {"ranking": [{"title": "a", "score": 0.5}]})
    probability = agreement({"probability": 0.1, "band": "low"}, {"probability": 0.2, "band": "low"})
    other = agreement({"x": 1}, {"x": 2})
    assert set(ranking) | set(probability) | set(other) == documented


def test_comparison_schema_ties_reason_to_matched() -> None:
    v = validator("comparison")
    body = orjson.loads(encode(COMPARISONS[0]))
    assert not v.is_valid({**body, "reason": "timed_out"})
    assert not v.is_valid({**body, "agreement": {}})
    assert not v.is_valid({**body, "matched": False})


@pytest.mark.parametrize(("name", "message"), [(n, m) for n in SCHEMA_NAMES for m in EXAMPLES[n]])
def test_encoded_messages_validate(name: str, message: Any) -> None:
    validator(name).validate(orjson.loads(encode(message)))


def test_minimal_request_body_validates() -> None:
    validator("request").validate(
        {"request_id": "r", "objective": "o", "client": "c", "reply_to": "t", "context": {}}
    )


def test_result_schema_ties_error_to_status() -> None:
    v = validator("result")
    assert not v.is_valid({"request_id": "r", "objective": None, "status": "error", "error": None})
    error = {"code": "x", "message": "y"}
    assert not v.is_valid({"request_id": "r", "objective": None, "status": "ok", "error": error})
    assert not v.is_valid({"request_id": "r", "objective": None, "status": "maybe"})


VALID_BODY = {"request_id": "r", "objective": "o", "client": "c", "reply_to": "t", "context": {}}


@pytest.mark.parametrize(
    "changes",
    [
        {"request_id": ...},
        {"context": ...},
        {"objective": None},
        {"request_id": ""},
        {"request_id": "r" * 201},
        {"client": 1},
        {"context": []},
        {"payload": "x"},
        {"deadline_ms": -1},
        {"deadline_ms": True},
        {"deadline_ms": "soon"},
        {"traffic": "batch"},
        {"traffic": 0},
        {"model": ["m"]},
    ],
)
def test_what_the_schema_rejects_decode_request_rejects(changes: dict[str, Any]) -> None:
    body = {k: v for k, v in {**VALID_BODY, **changes}.items() if v is not ...}
    assert not validator("request").is_valid(body)
    with pytest.raises(InvalidMessage):
        decode_request(orjson.dumps(body))


def test_json_schema_returns_a_fresh_copy() -> None:
    json_schema("request")["title"] = "changed"
    assert json_schema("request")["title"] == "Request"


def test_json_schema_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="request"):
        json_schema("reqeust")
