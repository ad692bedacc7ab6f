"""The public surface: exports, documentation, error codes, header names."""

from __future__ import annotations

import inspect
import pickle
from types import ModuleType

import schemas
from schemas import (
    ErrorCode,
    ErrorInfo,
    InvalidMessage,
    ScorelineError,
    codec,
    documents,
    errors,
    headers,
    messages,
)

MODULES = [schemas, codec, documents, errors, headers, messages]


def test_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(schemas).items()
        if not name.startswith("_") and not (isinstance(value, ModuleType) and name != "headers")
    }
    assert set(schemas.__all__) == public
    assert len(schemas.__all__) == len(set(schemas.__all__))


def test_each_module_exports_only_what_it_defines() -> None:
    for module in MODULES[1:]:
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_every_public_class_and_function_has_a_docstring() -> None:
    for module in MODULES:
        assert inspect.getdoc(module), module.__name__
        for name in module.__all__:
            value = getattr(module, name)
            if inspect.isclass(value) or inspect.isfunction(value):
                assert value.__doc__, f"{module.__name__}.{name}"


def test_error_codes_are_the_contract() -> None:
    codes = {k: v for k, v in vars(ErrorCode).items() if k.isupper()}
    assert codes == {k: k.lower() for k in codes}
    assert set(codes.values()) == {
        "malformed_json", "not_an_object", "missing_field", "wrong_type", "invalid_value",
        "payload_too_large", "unknown_objective", "unknown_client", "forbidden_objective",
        "forbidden_reply_to", "forbidden_override", "unknown_model", "header_mismatch",
        "invalid_payload", "model_unavailable", "workflow_error", "workflow_timeout", "deadline_expired",
        "rate_limited", "invalid_rules", "output_refused", "identity_mismatch", "untrusted_client",
    }


def test_every_error_code_is_documented() -> None:
    source = inspect.getsource(ErrorCode)
    for name in (k for k in vars(ErrorCode) if k.isupper()):
        line_after = source.split(f"    {name} = ")[1].splitlines()[1].strip()
        assert line_after.startswith('"'), name


def test_invalid_message_is_the_root_error_with_its_details() -> None:
    reason = "context must be an object, got list"
    exc = InvalidMessage(ErrorCode.WRONG_TYPE, reason, field="context", partial={"client": "c"})
    assert isinstance(exc, ScorelineError)
    assert ScorelineError.code == "internal"
    assert (exc.code, exc.message, exc.field) == ("wrong_type", reason, "context")
    assert exc.partial == {"client": "c"}
    assert exc.to_error_info() == ErrorInfo("wrong_type", reason, "context")
    assert str(exc) == f"wrong_type: {reason}"
    assert InvalidMessage("malformed_json", "x").partial == {}


def test_invalid_message_survives_pickling() -> None:
    exc = InvalidMessage(ErrorCode.MISSING_FIELD, "objective is required", field="objective", partial={"x": "y"})
    copy = pickle.loads(pickle.dumps(exc))
    assert (copy.code, copy.message, copy.field, copy.partial) == (exc.code, exc.message, exc.field, exc.partial)


def test_header_names() -> None:
    names = {k: v for k, v in vars(headers).items() if k.isupper() and isinstance(v, str)}
    assert names == {
        "REQUEST_ID": "scoreline-request-id",
        "OBJECTIVE": "scoreline-objective",
        "CLIENT": "scoreline-client",
        "REPLY_TO": "scoreline-reply-to",
        "SHARD_KEY": "scoreline-shard-key",
        "REPLY_PARTITION": "scoreline-reply-partition",
        "TRAFFIC": "scoreline-traffic",
        "MODEL_OVERRIDE": "scoreline-model-override",
        "CONTEXT_COUNTRY": "scoreline-context-country",
        "CONTEXT_DEVICE": "scoreline-context-device",
        "CONTEXT_SURFACE": "scoreline-context-surface",
        "MODEL": "scoreline-model",
        "CELL": "scoreline-cell",
        "SHARD": "scoreline-shard",
        "RULES_VERSION": "scoreline-rules-version",
        "SHADOWS": "scoreline-shadows",
        "ROLE": "scoreline-role",
        "ROUTED_AT": "scoreline-routed-at-ms",
        "PRIMARY_MODEL": "scoreline-primary-model",
        "TRACEPARENT": "traceparent",
    }
    grouped = set(headers.REQUEST_HEADERS) | set(headers.DECISION_HEADERS) | {headers.TRACEPARENT}
    assert grouped == set(names.values())
    assert set(headers.CONTEXT_HEADERS.values()) <= set(headers.REQUEST_HEADERS)


def test_schemas_imports_no_kafka_client() -> None:
    import subprocess
    import sys

    code = "import sys, schemas; print(sorted(m for m in ('aiokafka', 'faust', 'kafka') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
