"""The routing rules snapshot: frozen types a router reads on every request.

A :class:`Rules` value is immutable (frozen dataclasses, tuples and read-only
mappings inside), so the router can swap the whole snapshot on hot reload and
hand it to concurrent code without locks. Documents become snapshots in
:mod:`routing.parse` and go back to JSON in :mod:`routing.rules_doc`; the
format is described in ``docs/rules.md``.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

from routing.allocation import BUCKETS, buckets_for_percent, in_sample
from routing.errors import RoutingError
from schemas.errors import ErrorCode

__all__ = [
    "Canary",
    "Cell",
    "ClientPolicy",
    "Experiment",
    "Objective",
    "Rules",
    "ShadowEntry",
]

WILDCARD = "*"
_CLIENT_MATCH_KEY = "client"

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class Cell(NamedTuple):
    """One arm of an experiment."""

    name: str
    "Cell label reported in results (``1``, ``control``)."
    model: str
    "Model id (``name@version``) that serves the cell."
    weight: int = 1
    "Relative share of the experiment's users (positive integer)."


@dataclass(frozen=True, slots=True)
class Experiment:
    """An A/B experiment on part of one objective's users."""

    id: str
    "Identifier, unique across all objectives; reported as ``experiment:<id>``."
    salt: str
    "Names the bucket space that assigns allocated users to cells."
    allocation_percent: float
    "Share of the objective's users in the experiment (before ``match``)."
    offset_percent: float
    "Where the experiment's range starts in the objective's bucket space."
    cells: tuple[Cell, ...]
    "The arms, in document order."
    match: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: _EMPTY)
    "Context field (or ``client``) -> accepted values; all fields must match."
    compatible_with: tuple[str, ...] = ()
    "Experiments allowed to share buckets with this one (earlier one wins)."

    start: int = field(init=False, compare=False, repr=False)
    "First bucket of the allocation range."
    end: int = field(init=False, compare=False, repr=False)
    "One past the last bucket of the allocation range."
    cell_bounds: tuple[int, ...] = field(init=False, compare=False, repr=False)
    "Exclusive upper cell-bucket bound of each cell, cumulative by weight."
    match_sets: tuple[tuple[str, frozenset[str]], ...] = field(init=False, compare=False, repr=False)
    "``match`` prepared for lookups."
    needs_context: bool = field(init=False, compare=False, repr=False)
    "Whether ``match`` reads the request context (any field but ``client``)."
    context_fields: frozenset[str] = field(init=False, compare=False, repr=False)
    "The context fields ``match`` reads (every key but ``client``)."

    def __post_init__(self) -> None:
        start = buckets_for_percent(self.offset_percent)
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", start + buckets_for_percent(self.allocation_percent))
        total = sum(c.weight for c in self.cells) or 1
        bounds, running = [], 0
        for c in self.cells:
            running += c.weight
            bounds.append(running * BUCKETS // total)
        object.__setattr__(self, "cell_bounds", tuple(bounds))
        object.__setattr__(self, "match_sets", tuple((k, frozenset(v)) for k, v in self.match.items()))
        object.__setattr__(self, "context_fields", frozenset(k for k in self.match if k != _CLIENT_MATCH_KEY))
        object.__setattr__(self, "needs_context", bool(self.context_fields))

    def cell_for(self, cell_bucket: int) -> Cell:
        """Return the cell that owns ``cell_bucket`` (0..9999 in the experiment's salt).

        A binary search of the cumulative bounds: the cost grows with log(cells), not with cells.
        """
        return self.cells[min(bisect.bisect_right(self.cell_bounds, cell_bucket), len(self.cells) - 1)]


@dataclass(frozen=True, slots=True)
class Canary:
    """A gradual rollout: the top ``percent`` of an objective's bucket space."""

    model: str
    "Model id the canary users get."
    percent: float
    "Share of the objective's users, 0..100; ramping up keeps existing users."

    start: int = field(init=False, compare=False, repr=False)
    "First bucket of the canary range (the range ends at the top, 10,000)."

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", BUCKETS - buckets_for_percent(self.percent))


@dataclass(frozen=True, slots=True)
class ShadowEntry:
    """A candidate model that receives copies of a share of an objective's requests."""

    model: str
    "Candidate model id; never gets a copy of a request it serves as primary."
    percent: float
    "Share of requests copied, 0..100, sampled per request id."
    salt: str
    "Names the sampling bucket space."

    threshold: int = field(init=False, compare=False, repr=False)
    "Number of sampled request buckets out of 10,000."

    def __post_init__(self) -> None:
        object.__setattr__(self, "threshold", buckets_for_percent(self.percent))

    def samples(self, request_id: str) -> bool:
        """Whether the request ``request_id`` is copied to this candidate (see ``allocation.in_sample``)."""
        return in_sample(self.salt, request_id, self.threshold)


@dataclass(frozen=True, slots=True)
class Objective:
    """A business use case and how its requests are bound to models."""

    name: str
    "Objective name clients send (``title-ranking``)."
    shard_key: str
    "Context path of the shard key (``context.user_id``)."
    default: str
    "Model id for requests no other rule claims."
    salt: str
    "Names the allocation bucket space shared by experiments and canary."
    experiments: tuple[Experiment, ...] = ()
    "Experiments in precedence order."
    canary: Canary | None = None
    "Optional canary rollout."
    shadow: tuple[ShadowEntry, ...] = ()
    "Shadow candidates."
    override_clients: tuple[str, ...] = ()
    "Clients whose requests may name a ``model`` directly."

    override_set: frozenset[str] = field(init=False, compare=False, repr=False)
    "``override_clients`` prepared for lookups."
    needs_context: bool = field(init=False, compare=False, repr=False)
    "Whether routing reads context fields beyond the shard key."
    context_fields: frozenset[str] = field(init=False, compare=False, repr=False)
    "The context fields the experiments match on, all together."

    def __post_init__(self) -> None:
        object.__setattr__(self, "override_set", frozenset(self.override_clients))
        object.__setattr__(self, "context_fields", frozenset().union(*(e.context_fields for e in self.experiments)))
        object.__setattr__(self, "needs_context", bool(self.context_fields))


@dataclass(frozen=True, slots=True)
class ClientPolicy:
    """What one client may do."""

    name: str
    "Client name, as sent in requests."
    objectives: tuple[str, ...]
    "Objectives it may call; ``('*',)`` means all."
    reply_topics: tuple[str, ...]
    "Topics it may name in ``reply_to``; an entry ending in ``*`` is a prefix."
    rate_limit_rps: float | None = None
    "Most requests per second one router process accepts from this client; None is unlimited."
    burst: float | None = None
    "Requests the client may send at once above its rate (the token bucket's size); default one second's worth."

    _all_objectives: bool = field(init=False, compare=False, repr=False)
    _objective_set: frozenset[str] = field(init=False, compare=False, repr=False)
    _exact_topics: frozenset[str] = field(init=False, compare=False, repr=False)
    _topic_prefixes: tuple[str, ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_all_objectives", WILDCARD in self.objectives)
        object.__setattr__(self, "_objective_set", frozenset(self.objectives))
        object.__setattr__(
            self, "_exact_topics", frozenset(t for t in self.reply_topics if not t.endswith(WILDCARD))
        )
        object.__setattr__(
            self, "_topic_prefixes", tuple(t[:-1] for t in self.reply_topics if t.endswith(WILDCARD))
        )

    def allows_objective(self, objective: str) -> bool:
        """Tell whether the client may call ``objective``."""
        return self._all_objectives or objective in self._objective_set

    def allows_reply_to(self, topic: str) -> bool:
        """Tell whether the client may receive results on ``topic``."""
        return topic in self._exact_topics or any(topic.startswith(p) for p in self._topic_prefixes)


@dataclass(frozen=True, slots=True)
class Rules:
    """One version of the routing rules."""

    version: int
    "Version stamped by the publisher; 0 for rules not yet published."
    shards: tuple[str, ...]
    "Shard names in document order."
    models: Mapping[str, str]
    "Model id -> the shard it is deployed on."
    clients: Mapping[str, ClientPolicy]
    "Client name -> its policy."
    objectives: Mapping[str, Objective]
    "Objective name -> its routing."

    def objective(self, name: str) -> Objective:
        """Return the objective ``name``; raise ``RoutingError(unknown_objective)`` if none."""
        obj = self.objectives.get(name)
        if obj is None:
            raise RoutingError(
                ErrorCode.UNKNOWN_OBJECTIVE, f"unknown objective {name!r}", "objective"
            )
        return obj

    def needs_context(self, objective: str) -> bool:
        """Tell whether routing ``objective`` reads context fields beyond the shard key.

        When False the router may route from Kafka headers alone (request id,
        objective, client, reply_to, shard key, override model). False for an
        unknown objective too: :func:`routing.route` rejects it from headers.
        """
        obj = self.objectives.get(objective)
        return obj is not None and obj.needs_context

    def context_fields(self, objective: str) -> frozenset[str]:
        """Return the context fields routing ``objective`` matches on (beyond the shard key).

        Empty when :meth:`needs_context` is False, and for an unknown objective. A router
        that has these fields from somewhere other than the body (the client library's
        ``scoreline-context-*`` headers) may route without parsing the body.
        """
        obj = self.objectives.get(objective)
        return obj.context_fields if obj is not None else frozenset()

    def shard_key_path(self, objective: str) -> str:
        """Return the context path of ``objective``'s shard key (``context.user_id``).

        Raises ``RoutingError(unknown_objective)`` for an unknown objective.
        """
        return self.objective(objective).shard_key

    def models_on(self, shard: str) -> tuple[str, ...]:
        """Return the model ids deployed on ``shard``, in document order (empty if unknown)."""
        return tuple(m for m, s in self.models.items() if s == shard)

    def shard_of(self, model: str) -> str:
        """Return the shard ``model`` is deployed on.

        Raises ``RoutingError(unknown_model)`` for a model the rules do not place.
        """
        shard = self.models.get(model)
        if shard is None:
            raise RoutingError(ErrorCode.UNKNOWN_MODEL, f"unknown model {model!r}", "model")
        return shard

    def reply_allowed(self, client: str, reply_to: str) -> bool:
        """Tell whether ``client`` exists and may receive results on ``reply_to``.

        The router asks this before sending an error result for a rejected
        request: results only ever go to a topic the client is allowed.
        """
        policy = self.clients.get(client)
        return policy is not None and policy.allows_reply_to(reply_to)



def default_shadow_salt(objective: str, model: str) -> str:
    """The sampling salt of a shadow entry whose document names none."""
    return f"{objective}:shadow:{model}"
