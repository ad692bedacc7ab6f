"""Decoders of our own messages: results, dead letters, shadow results and comparisons.

They are our own output, so they check types only. Each decoder is built once
per class from its dataclass definition, so a new field with a default needs
no change here. Top-level fields a decoder does not know are ignored, and an
optional field that is ``null`` takes its default, as if it were absent.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Generic, TypeVar

from schemas.errors import ErrorCode, InvalidMessage
from schemas.json_body import JSON_TYPE_NAMES, json_type, loads, partial
from schemas.messages import Comparison, DeadLetter, Result, ShadowResult

__all__ = ["decode_comparison", "decode_dead_letter", "decode_result", "decode_shadow_result"]


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
                f"{what} must be a JSON object, got {json_type(body)}",
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
                        partial=partial(body),
                    )
                continue
            value = body[name]
            if nested is not None and type(value) is dict:
                value = nested(value)
            elif accepted is not None and type(value) not in accepted:
                expected = " or ".join(sorted({JSON_TYPE_NAMES.get(t, t.__name__) for t in accepted}))
                raise InvalidMessage(
                    ErrorCode.WRONG_TYPE,
                    f"{self._prefix}{name} must be of type {expected}, got {json_type(value)}",
                    field=self._prefix + name,
                    partial=partial(body),
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
    return _decode_result_body(loads(data, "result"))


def decode_dead_letter(data: bytes) -> DeadLetter:
    """Decode a dead-letter record.

    Raises:
        InvalidMessage: the bytes are not a dead-letter record.
    """
    return _decode_dead_letter_body(loads(data, "dead letter"))


def decode_shadow_result(data: bytes) -> ShadowResult:
    """Decode a shadow result, rebuilding its nested :class:`~schemas.messages.ErrorInfo`.

    Raises:
        InvalidMessage: the bytes are not a shadow result.
    """
    return _decode_shadow_result_body(loads(data, "shadow result"))


def decode_comparison(data: bytes) -> Comparison:
    """Decode a shadow comparison record.

    Raises:
        InvalidMessage: the bytes are not a comparison.
    """
    return _decode_comparison_body(loads(data, "comparison"))

