"""Kafka header names of the contract.

Headers let the router route a request without parsing its body: the client
library copies the identifying fields into them. A request without headers
(any plain producer, kcat) is still valid; the router then reads the body.
Header values are UTF-8 strings. This module holds names only, so that it
can be imported without a Kafka client.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = [
    "CELL",
    "CLIENT",
    "CONTEXT_COUNTRY",
    "CONTEXT_DEVICE",
    "CONTEXT_HEADERS",
    "CONTEXT_SURFACE",
    "DECISION_HEADERS",
    "MODEL",
    "MODEL_OVERRIDE",
    "OBJECTIVE",
    "PRIMARY_MODEL",
    "REPLY_PARTITION",
    "REPLY_TO",
    "REQUEST_HEADERS",
    "REQUEST_ID",
    "ROLE",
    "ROUTED_AT",
    "RULES_VERSION",
    "SHADOWS",
    "SHARD",
    "SHARD_KEY",
    "TRACEPARENT",
    "TRAFFIC",
]

# Set by the client library on every request.

REQUEST_ID = "scoreline-request-id"
"The request's ``request_id``."

OBJECTIVE = "scoreline-objective"
"The request's ``objective``."

CLIENT = "scoreline-client"
"The request's ``client``."

REPLY_TO = "scoreline-reply-to"
"The request's ``reply_to`` topic."

SHARD_KEY = "scoreline-shard-key"
"The value requests are partitioned by (usually ``context.user_id``)."

REPLY_PARTITION = "scoreline-reply-partition"
"Optional: the partition of ``reply_to`` the result should go to, as a decimal string."

TRAFFIC = "scoreline-traffic"
"The request's ``traffic`` class."
MODEL_OVERRIDE = "scoreline-model-override"
"The request's ``model`` override, so the router can honour it without parsing the body."

# Optional, set by the client library when the context has the field as a scalar: the
# context fields routing rules match on, so the router can route those objectives without
# parsing the body too. The worker checks each one it finds against the body.

CONTEXT_COUNTRY = "scoreline-context-country"
"The request's ``context.country``, as the text it matches as (see ``routing.route.scalar_str``)."

CONTEXT_DEVICE = "scoreline-context-device"
"The request's ``context.device``, as the text it matches as."

CONTEXT_SURFACE = "scoreline-context-surface"
"The request's ``context.surface``, as the text it matches as."

CONTEXT_HEADERS: Mapping[str, str] = MappingProxyType({
    "country": CONTEXT_COUNTRY,
    "device": CONTEXT_DEVICE,
    "surface": CONTEXT_SURFACE,
})
"Context field -> the header that carries it."

# Added by the router to routed work, shadow copies and results.

MODEL = "scoreline-model"
"The model the router chose."

CELL = "scoreline-cell"
"The experiment cell the request fell in."

SHARD = "scoreline-shard"
"The shard the request was routed to."

RULES_VERSION = "scoreline-rules-version"
"The version of the routing rules that made the decision, as a decimal string."

SHADOWS = "scoreline-shadows"
"Comma-separated candidate models the request was copied to."

ROLE = "scoreline-role"
"``primary`` or ``shadow`` (see :class:`schemas.messages.Role`)."

ROUTED_AT = "scoreline-routed-at-ms"
"Epoch milliseconds when the router made the decision, as a decimal string."

PRIMARY_MODEL = "scoreline-primary-model"
"On a shadow copy: the model that answers the client."

TRACEPARENT = "traceparent"
"W3C trace context, passed through unchanged."

REQUEST_HEADERS: tuple[str, ...] = (
    REQUEST_ID,
    OBJECTIVE,
    CLIENT,
    REPLY_TO,
    SHARD_KEY,
    REPLY_PARTITION,
    TRAFFIC,
    MODEL_OVERRIDE,
    CONTEXT_COUNTRY,
    CONTEXT_DEVICE,
    CONTEXT_SURFACE,
)
"The headers a client may set."

DECISION_HEADERS: tuple[str, ...] = (
    MODEL,
    CELL,
    SHARD,
    RULES_VERSION,
    SHADOWS,
    ROLE,
    ROUTED_AT,
    PRIMARY_MODEL,
)
"The headers the router adds to what it routes; they are not the client's to set."
