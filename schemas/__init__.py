"""The wire contract of scoreline: message types, their codec, header names, errors.

Every other package imports from here and nothing here imports from them.
Each message also has a JSON Schema document (draft 2020-12) under
``schemas/json/`` for producers and consumers in other languages; read one
with :func:`json_schema`.
"""

from schemas import headers
from schemas.codec import (
    DEFAULT_MAX_REQUEST_BYTES,
    MAX_REQUEST_ID_LENGTH,
    Message,
    dead_letter_for,
    decode_comparison,
    decode_dead_letter,
    decode_request,
    decode_result,
    decode_shadow_result,
    encode,
    encode_request,
    encode_result,
    request_from_dict,
)
from schemas.documents import SCHEMA_NAMES, json_schema
from schemas.errors import ErrorCode, InvalidMessage, ScorelineError
from schemas.messages import (
    SLICE_FIELDS,
    TRAFFIC_CLASSES,
    Comparison,
    DeadLetter,
    ErrorInfo,
    Request,
    Result,
    Role,
    ShadowResult,
    Stage,
    Status,
    Traffic,
    Unmatched,
)

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "MAX_REQUEST_ID_LENGTH",
    "SCHEMA_NAMES",
    "SLICE_FIELDS",
    "TRAFFIC_CLASSES",
    "Comparison",
    "DeadLetter",
    "ErrorCode",
    "ErrorInfo",
    "InvalidMessage",
    "Message",
    "Request",
    "Result",
    "Role",
    "ScorelineError",
    "ShadowResult",
    "Stage",
    "Status",
    "Traffic",
    "Unmatched",
    "dead_letter_for",
    "decode_comparison",
    "decode_dead_letter",
    "decode_request",
    "decode_result",
    "decode_shadow_result",
    "encode",
    "encode_request",
    "encode_result",
    "headers",
    "json_schema",
    "request_from_dict",
]
