"""Reading a JSON message body: parsing the bytes, naming value types, and what identifies a rejected body.

Shared by the request decoder (:mod:`schemas.codec`) and the decoders of our
own messages (:mod:`schemas.decoders`), so both word their errors alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from schemas.errors import ErrorCode, InvalidMessage

__all__ = ["JSON_TYPE_NAMES", "PARTIAL_FIELDS", "json_type", "loads", "partial", "partial_of_request"]

PARTIAL_FIELDS = ("request_id", "client", "reply_to", "objective", "traffic")
"The fields of a rejected body carried in ``InvalidMessage.partial`` when they are strings."

JSON_TYPE_NAMES: dict[type, str] = {
    dict: "object",
    list: "list",
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    type(None): "null",
}
"Python type of a parsed JSON value -> its JSON name, as error messages say it."


def loads(data: bytes | None, what: str) -> Any:
    """Parse ``data`` as JSON; raise ``InvalidMessage(malformed_json)`` naming ``what`` when it is not."""
    if data is None:
        raise InvalidMessage(ErrorCode.MALFORMED_JSON, f"{what} has no body")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidMessage(ErrorCode.MALFORMED_JSON, f"{what} is not valid UTF-8 JSON: {exc}") from exc


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type (``object``, ``string``, ``null``...)."""
    return JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def partial(body: Mapping[str, Any]) -> dict[str, str]:
    """The identifying fields of ``body`` that are readable (strings), for ``InvalidMessage.partial``."""
    return {name: body[name] for name in PARTIAL_FIELDS if type(body.get(name)) is str}


def partial_of_request(request: Any) -> dict[str, str]:
    """The same identifying fields of an already decoded request, for rejecting it after decoding."""
    return {name: getattr(request, name) for name in PARTIAL_FIELDS}
