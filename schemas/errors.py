"""The project's root error type and the stable codes of every rejection.

The exception tree (each package keeps its part in its own ``errors.py``)::

    ScorelineError                 root: anything scoreline raises on purpose      internal
     ├── InvalidMessage            a message body breaks the contract (schemas)    the rule broken
     ├── RoutingError              the rules reject a request (routing)            unknown_objective, …
     ├── RulesError                a rules document is invalid (routing)           invalid_rules
     ├── ModelUnavailable          a model cannot be served (workflows)            model_unavailable
     │    └── ModelPackageError    a model package on disk is broken (workflows)   model_unavailable
     ├── UnknownFact               a workflow asked for a fact the store lacks     workflow_error
     ├── WorkflowError             a workflow failed while scoring (workflows)     workflow_error
     ├── BrokerError               the local broker cannot start or stop (streams) broker_error
     ├── KafkaUnavailable          no Kafka answered in time (streams)             kafka_unavailable
     └── PartitionRevoked          a rebalance took a member's partitions (streams) partition_revoked

A new error derives from :class:`ScorelineError`, sets the class attribute
``code`` (one of :class:`ErrorCode` when a client can cause it) and is added
to the drawing above. Foreign exceptions (aiokafka, orjson, numpy) are
translated into this tree where they happen (``raise Mapped(...) from exc``),
so the Kafka edge catches exactly one type to turn a failure into an error
result or a dead-letter record.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schemas.messages import ErrorInfo

__all__ = ["ErrorCode", "InvalidMessage", "ScorelineError"]


class ErrorCode:
    """Stable error codes carried by error results and dead-letter records.

    Clients branch on these strings, so a code is never renamed or reused;
    new failure kinds get new codes.
    """

    MALFORMED_JSON = "malformed_json"
    "The body is not valid UTF-8 JSON (or there is no body at all)."

    NOT_AN_OBJECT = "not_an_object"
    "The body is valid JSON but not a JSON object."

    MISSING_FIELD = "missing_field"
    "A required field is absent or null; ``field`` names it."

    WRONG_TYPE = "wrong_type"
    "A field has the wrong JSON type; ``field`` names it."

    INVALID_VALUE = "invalid_value"
    "A field has the right type but a value outside the contract; ``field`` names it."

    PAYLOAD_TOO_LARGE = "payload_too_large"
    "The body is larger than the accepted maximum, so it was not parsed."

    UNKNOWN_OBJECTIVE = "unknown_objective"
    "The rules define no objective of that name."

    UNKNOWN_CLIENT = "unknown_client"
    "The rules define no client of that name."

    FORBIDDEN_OBJECTIVE = "forbidden_objective"
    "The client may not call that objective."

    FORBIDDEN_REPLY_TO = "forbidden_reply_to"
    "The client may not receive results on that ``reply_to`` topic."

    FORBIDDEN_OVERRIDE = "forbidden_override"
    "The request names a ``model`` but the client may not override routing."

    UNKNOWN_MODEL = "unknown_model"
    "The requested or routed model is not deployed."

    HEADER_MISMATCH = "header_mismatch"
    "A ``scoreline-*`` header disagrees with the same field in the body."

    INVALID_PAYLOAD = "invalid_payload"
    "The workflow rejected the payload (for example ``payload.titles`` missing)."

    MODEL_UNAVAILABLE = "model_unavailable"
    "The model exists but cannot score right now (not loaded, shard down)."

    WORKFLOW_ERROR = "workflow_error"
    "The workflow failed while scoring; a bug or a broken fact source, not the client's fault."

    WORKFLOW_TIMEOUT = "workflow_timeout"
    "The workflow call ran past its model's time limit (``serving.time_limit_ms``); the worker went on without it."

    DEADLINE_EXPIRED = "deadline_expired"
    "``deadline_ms`` passed before the request was scored."

    RATE_LIMITED = "rate_limited"
    "The client sent more than its allowed rate."

    IDENTITY_MISMATCH = "identity_mismatch"
    "The request names a client other than the one whose own request topic it arrived on."

    UNTRUSTED_CLIENT = "untrusted_client"
    "The request came on a shared topic, where this deployment does not trust the ``client`` field."

    INVALID_RULES = "invalid_rules"
    "A routing rules document failed validation; the message lists every problem with its path."

    OUTPUT_REFUSED = "output_refused"
    "The broker refused a result or copy produced for this request (e.g. too large); kept here instead."


class ScorelineError(Exception):
    """Root of every error scoreline raises on purpose.

    Subclasses set the class attribute ``code`` to their :class:`ErrorCode`;
    an error that reaches the Kafka edge without a more specific code is
    reported as ``internal``.
    """

    code: str = "internal"
    "The stable error code reported for this error."


class InvalidMessage(ScorelineError):
    """A message body that breaks the contract.

    Raised by the decoders in :mod:`schemas.codec`. ``partial`` carries the
    identifying fields that could still be read, so that the caller can send
    an error result to ``reply_to`` instead of only dead-lettering the input.

    Args:
        code: one of :class:`ErrorCode`.
        message: a human-readable reason that names the offending field.
        field: the top-level field at fault, if one is.
        partial: the string fields ``request_id``, ``client``, ``reply_to``,
            ``objective`` and ``traffic`` that were readable in the body.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        field: str | None = None,
        partial: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.partial: dict[str, Any] = dict(partial) if partial else {}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"InvalidMessage(code={self.code!r}, message={self.message!r}, field={self.field!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments defeat Exception's default pickling, and the
        # error may cross a process boundary when roles run apart.
        return (_rebuild_invalid_message, (self.code, self.message, self.field, self.partial))

    def to_error_info(self) -> ErrorInfo:
        """Return the error as the ``error`` object of a result."""
        return ErrorInfo(code=self.code, message=self.message, field=self.field)


def _rebuild_invalid_message(
    code: str, message: str, field: str | None, partial: dict[str, Any]
) -> InvalidMessage:
    return InvalidMessage(code, message, field=field, partial=partial)
