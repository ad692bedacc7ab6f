"""Errors raised by routing.

The routing part of the exception tree::

    ScorelineError (schemas.errors)
     ├── RulesError      a rules document is invalid (code "invalid_rules"); carries every problem
     └── RoutingError    a request cannot be routed; ``code`` is one of ErrorCode, ``field`` names the culprit
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from schemas.errors import ErrorCode, ScorelineError
from schemas.messages import ErrorInfo

__all__ = ["INVALID_RULES", "RoutingError", "RulesError"]

INVALID_RULES = ErrorCode.INVALID_RULES
"Error code of :class:`RulesError` (not a request rejection, so not in ErrorCode)."


class RulesError(ScorelineError):
    """A rules document failed validation.

    ``problems`` lists every problem found, not just the first, each a string
    that starts with the path of the offending value, for example
    ``objectives.title-ranking.experiments[0].cells.2: unknown model 'x'``.
    """

    code = INVALID_RULES

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        self.message = f"invalid rules ({len(self.problems)} problem(s)):\n" + "\n".join(
            f"  - {p}" for p in self.problems
        )
        super().__init__(self.message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (RulesError, (self.problems,))


class RoutingError(ScorelineError):
    """A request that the rules reject.

    Args:
        code: one of :class:`schemas.errors.ErrorCode` (``unknown_objective``,
            ``unknown_client``, ``forbidden_objective``, ``forbidden_reply_to``,
            ``forbidden_override``, ``unknown_model``).
        message: a human-readable reason that names the field.
        field: the request field at fault (``objective``, ``client``,
            ``reply_to``, ``model``).
    """

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"RoutingError(code={self.code!r}, message={self.message!r}, field={self.field!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (RoutingError, (self.code, self.message, self.field))

    def to_error_info(self) -> ErrorInfo:
        """Return the error as the ``error`` object of a result."""
        return ErrorInfo(code=self.code, message=self.message, field=self.field)
