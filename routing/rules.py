"""The routing rules snapshot: frozen types, parsing with validation, and back to JSON.

A :class:`Rules` value is immutable (frozen dataclasses, tuples and read-only
mappings inside), so the router can swap the whole snapshot on hot reload and
hand it to concurrent code without locks. The document format is described in
``docs/rules.md``; :func:`parse_rules` reports every problem of a document at
once, each naming its path.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

from schemas.errors import ErrorCode

from routing.allocation import BUCKETS, buckets_for_percent
from routing.errors import RoutingError, RulesError
from routing.validate import check_layout

__all__ = [
    "Canary",
    "Cell",
    "ClientPolicy",
    "Experiment",
    "Objective",
    "Rules",
    "ShadowEntry",
    "load_rules",
    "parse_rules",
    "rules_to_doc",
]

WILDCARD = "*"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# No dots in client names: a client's own request topic is ``<prefix>requests.<client>``.
_CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
RESERVED_CLIENT_NAMES = frozenset({"backfill"})
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*@[A-Za-z0-9][A-Za-z0-9._-]*")
_FIELD_PATH = re.compile(r"context(\.[A-Za-z0-9_-]+)+")
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
        object.__setattr__(self, "needs_context", any(k != _CLIENT_MATCH_KEY for k in self.match))

    def cell_for(self, cell_bucket: int) -> Cell:
        """Return the cell that owns ``cell_bucket`` (0..9999 in the experiment's salt)."""
        for c, bound in zip(self.cells, self.cell_bounds):
            if cell_bucket < bound:
                return c
        return self.cells[-1]


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

    def __post_init__(self) -> None:
        object.__setattr__(self, "override_set", frozenset(self.override_clients))
        object.__setattr__(self, "needs_context", any(e.needs_context for e in self.experiments))


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


# ---------------------------------------------------------------- parsing


def load_rules(path: str | os.PathLike[str], *, version: int | None = None) -> Rules:
    """Read a JSON rules file and parse it with :func:`parse_rules`.

    Raises :class:`RulesError` for a document that is not JSON or not valid
    rules (``OSError`` passes through for a file that cannot be read).
    """
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RulesError([f"{os.fspath(path)}: not valid JSON: {exc}"]) from exc
    return parse_rules(doc, version=version)


def parse_rules(doc: Mapping[str, Any], *, version: int | None = None) -> Rules:
    """Validate a rules document and return its frozen snapshot.

    ``version``, when given, stamps the snapshot (the publisher assigns the
    next version) and wins over the document's own ``version``; a document
    with neither is version 0, "not yet published".

    Raises :class:`RulesError` listing every problem, each naming its path.
    """
    return _Reader().read(doc, version)


def rules_to_doc(rules: Rules) -> dict[str, Any]:
    """Return the JSON document of ``rules``; ``parse_rules`` of it gives equal rules.

    Optional fields equal to their defaults are left out.
    """
    doc: dict[str, Any] = {}
    if rules.version:
        doc["version"] = rules.version
    doc["shards"] = {s: {} for s in rules.shards}
    doc["models"] = {m: {"shard": s} for m, s in rules.models.items()}
    doc["clients"] = {c.name: _client_to_doc(c) for c in rules.clients.values()}
    doc["objectives"] = {o.name: _objective_to_doc(o) for o in rules.objectives.values()}
    return doc


def _client_to_doc(c: ClientPolicy) -> dict[str, Any]:
    doc: dict[str, Any] = {"objectives": list(c.objectives), "reply_topics": list(c.reply_topics)}
    if c.rate_limit_rps is not None:
        doc["rate_limit_rps"] = _percent_out(c.rate_limit_rps)
    if c.burst is not None:
        doc["burst"] = _percent_out(c.burst)
    return doc


def _percent_out(p: float) -> int | float:
    return int(p) if float(p).is_integer() else p


def _objective_to_doc(o: Objective) -> dict[str, Any]:
    out: dict[str, Any] = {"shard_key": o.shard_key, "default": o.default}
    if o.salt != o.name:
        out["salt"] = o.salt
    if o.experiments:
        out["experiments"] = [_experiment_to_doc(e) for e in o.experiments]
    if o.canary is not None:
        out["canary"] = {"model": o.canary.model, "percent": _percent_out(o.canary.percent)}
    if o.shadow:
        entries = []
        for s in o.shadow:
            entry: dict[str, Any] = {"model": s.model, "percent": _percent_out(s.percent)}
            if s.salt != _default_shadow_salt(o.name, s.model):
                entry["salt"] = s.salt
            entries.append(entry)
        out["shadow"] = entries
    if o.override_clients:
        out["override_clients"] = list(o.override_clients)
    return out


def _experiment_to_doc(e: Experiment) -> dict[str, Any]:
    out: dict[str, Any] = {"id": e.id}
    if e.salt != e.id:
        out["salt"] = e.salt
    out["allocation_percent"] = _percent_out(e.allocation_percent)
    if e.offset_percent:
        out["offset_percent"] = _percent_out(e.offset_percent)
    if e.match:
        out["match"] = {k: list(v) for k, v in e.match.items()}
    out["cells"] = {
        c.name: c.model if c.weight == 1 else {"model": c.model, "weight": c.weight} for c in e.cells
    }
    if e.compatible_with:
        out["compatible_with"] = list(e.compatible_with)
    return out


def _default_shadow_salt(objective: str, model: str) -> str:
    return f"{objective}:shadow:{model}"


class _Reader:
    """Reads a rules document, collecting every problem instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.shard_names: set[str] = set()
        self.model_names: set[str] = set()
        self.objective_names: set[str] = set()
        self.client_names: set[str] = set()
        self.experiment_ids: dict[str, str] = {}

    def problem(self, path: str, text: str) -> None:
        self.problems.append(f"{path}: {text}" if path else text)

    # -- generic readers

    def fields(
        self, value: Any, path: str, required: tuple[str, ...], optional: tuple[str, ...] = ()
    ) -> Mapping[str, Any] | None:
        if not isinstance(value, Mapping):
            self.problem(path or "(document)", f"expected an object, got {_kind(value)}")
            return None
        prefix = f"{path}." if path else ""
        for key in value:
            if key not in required and key not in optional:
                self.problem(f"{prefix}{key}", "unknown field")
        for key in required:
            if key not in value:
                self.problem(f"{prefix}{key}", "missing required field")
        return value

    def string(self, value: Any, path: str, pattern: re.Pattern[str] | None = None, what: str = "") -> str | None:
        if not isinstance(value, str) or not value:
            self.problem(path, f"expected a non-empty string, got {_kind(value)}")
            return None
        if pattern is not None and not pattern.fullmatch(value):
            self.problem(path, f"{value!r} is not a valid {what}")
            return None
        return value

    def strings(self, value: Any, path: str) -> tuple[str, ...] | None:
        if not isinstance(value, list):
            self.problem(path, f"expected a list of strings, got {_kind(value)}")
            return None
        if not value:
            self.problem(path, "must not be empty")
            return None
        out = []
        for i, item in enumerate(value):
            s = self.string(item, f"{path}[{i}]")
            if s is not None:
                if s in out:
                    self.problem(f"{path}[{i}]", f"duplicate entry {s!r}")
                out.append(s)
        return tuple(out) if len(out) == len(value) else None

    def percent(self, value: Any, path: str) -> float | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.problem(path, f"expected a number 0..100, got {_kind(value)}")
            return None
        if not 0 <= value <= 100:
            self.problem(path, f"{value!r} is outside 0..100")
            return None
        if abs(value * 100 - round(value * 100)) > 1e-6:
            self.problem(path, f"{value!r} is finer than the 0.01 % bucket resolution")
            return None
        return value

    def names(self, value: Any, path: str, pattern: re.Pattern[str], what: str) -> Mapping[str, Any]:
        """A mapping keyed by names; records each bad name and returns the mapping (or {})."""
        if not isinstance(value, Mapping):
            self.problem(path, f"expected an object, got {_kind(value)}")
            return {}
        for key in value:
            if not isinstance(key, str) or not pattern.fullmatch(key):
                self.problem(f"{path}.{key}", f"{key!r} is not a valid {what}")
        return value

    def reference(self, value: Any, path: str, known: set[str], what: str) -> str | None:
        s = self.string(value, path)
        if s is not None and s not in known:
            self.problem(path, f"unknown {what} {s!r}")
            return None
        return s

    # -- the document

    def read(self, doc: Any, version: int | None) -> Rules:
        top = self.fields(doc, "", ("shards", "models", "clients", "objectives"), ("version",))
        if top is None:
            raise RulesError(self.problems)
        if version is not None:
            self.version(version, "version (argument)")
            stamped = version
        elif "version" in top:
            stamped = self.version(top["version"], "version")
        else:
            stamped = 0

        shards = self.names(top.get("shards", {}), "shards", _NAME, "shard name")
        self.shard_names = set(shards)
        for name, body in shards.items():
            self.fields(body, f"shards.{name}", ())

        models_doc = self.names(top.get("models", {}), "models", _MODEL_ID, "model id (name@version)")
        self.model_names = set(models_doc)
        models: dict[str, str] = {}
        for name, body in models_doc.items():
            spec = self.fields(body, f"models.{name}", ("shard",))
            if spec is not None and "shard" in spec:
                shard = self.reference(spec["shard"], f"models.{name}.shard", self.shard_names, "shard")
                if shard is not None:
                    models[name] = shard

        objectives_doc = self.names(top.get("objectives", {}), "objectives", _NAME, "objective name")
        clients_doc = self.names(top.get("clients", {}), "clients", _CLIENT_NAME, "client name")
        for reserved in RESERVED_CLIENT_NAMES & set(clients_doc):
            self.problem(f"clients.{reserved}", f"{reserved!r} is reserved (it names the backfill request topic)")
        self.objective_names = set(objectives_doc)
        self.client_names = set(clients_doc)

        clients: dict[str, ClientPolicy] = {}
        for name, body in clients_doc.items():
            policy = self.client(name, body)
            if policy is not None:
                clients[name] = policy

        objectives: dict[str, Objective] = {}
        for name, body in objectives_doc.items():
            obj = self.objective(name, body)
            if obj is not None:
                objectives[name] = obj

        if self.problems:
            raise RulesError(self.problems)
        return Rules(
            version=stamped,
            shards=tuple(shards),
            models=MappingProxyType(models),
            clients=MappingProxyType(clients),
            objectives=MappingProxyType(objectives),
        )

    def version(self, value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.problem(path, f"expected a positive integer, got {value!r}")
            return 0
        return value

    def client(self, name: str, body: Any) -> ClientPolicy | None:
        path = f"clients.{name}"
        spec = self.fields(body, path, ("objectives", "reply_topics"), ("rate_limit_rps", "burst"))
        if spec is None or not {"objectives", "reply_topics"} <= spec.keys():
            return None
        limits = {}
        for key in ("rate_limit_rps", "burst"):
            if key in spec:
                value = spec[key]
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                    self.problem(f"{path}.{key}", f"expected a positive number, got {value!r}")
                else:
                    limits[key] = float(value)
        if "burst" in limits and "rate_limit_rps" not in spec:
            self.problem(f"{path}.burst", "burst needs rate_limit_rps")
        objectives = self.strings(spec["objectives"], f"{path}.objectives")
        if objectives is not None and objectives != (WILDCARD,):
            for i, o in enumerate(objectives):
                if o == WILDCARD:
                    self.problem(f"{path}.objectives[{i}]", "'*' must be the only entry")
                elif o not in self.objective_names:
                    self.problem(f"{path}.objectives[{i}]", f"unknown objective {o!r}")
        topics = self.strings(spec["reply_topics"], f"{path}.reply_topics")
        for i, t in enumerate(topics or ()):
            if WILDCARD in t[:-1]:
                self.problem(f"{path}.reply_topics[{i}]", f"{t!r}: '*' may only end a prefix")
            elif t == WILDCARD:
                self.problem(f"{path}.reply_topics[{i}]", "a bare '*' would allow any topic; give a prefix")
        if objectives is None or topics is None:
            return None
        return ClientPolicy(name=name, objectives=objectives, reply_topics=topics, **limits)

    def objective(self, name: str, body: Any) -> Objective | None:
        path = f"objectives.{name}"
        before = len(self.problems)
        spec = self.fields(
            body,
            path,
            ("shard_key", "default"),
            ("salt", "experiments", "canary", "shadow", "override_clients"),
        )
        if spec is None:
            return None
        shard_key = spec.get("shard_key")
        if "shard_key" in spec:
            shard_key = self.string(shard_key, f"{path}.shard_key")
            if shard_key is not None and not _FIELD_PATH.fullmatch(shard_key):
                self.problem(
                    f"{path}.shard_key",
                    f"{shard_key!r} is not a context path (expected e.g. 'context.user_id')",
                )
        default = None
        if "default" in spec:
            default = self.reference(spec["default"], f"{path}.default", self.model_names, "model")
        salt = self.string(spec["salt"], f"{path}.salt") if "salt" in spec else name

        experiments = self.list_of(spec.get("experiments", []), f"{path}.experiments", self.experiment)
        canary = None
        if "canary" in spec:
            canary = self.canary(spec["canary"], f"{path}.canary")
        shadow = self.list_of(
            spec.get("shadow", []), f"{path}.shadow", lambda v, p: self.shadow_entry(name, v, p)
        )
        seen: dict[str, int] = {}
        for i, s in enumerate(shadow):
            if s.model in seen:
                self.problem(f"{path}.shadow[{i}].model", f"model {s.model!r} is already shadow[{seen[s.model]}]")
            seen.setdefault(s.model, i)
        override_clients: tuple[str, ...] = ()
        if "override_clients" in spec:
            raw = spec["override_clients"]
            if raw == []:
                override_clients = ()
            else:
                override_clients = self.strings(raw, f"{path}.override_clients") or ()
            for i, c in enumerate(override_clients):
                if c not in self.client_names:
                    self.problem(f"{path}.override_clients[{i}]", f"unknown client {c!r}")

        if len(self.problems) > before:
            return None
        self.problems.extend(check_layout(path, experiments, canary))
        if len(self.problems) > before:
            return None
        assert shard_key is not None and default is not None and salt is not None
        return Objective(
            name=name,
            shard_key=shard_key,
            default=default,
            salt=salt,
            experiments=tuple(experiments),
            canary=canary,
            shadow=tuple(shadow),
            override_clients=override_clients,
        )

    def list_of(self, value: Any, path: str, read: Callable[[Any, str], Any]) -> list[Any]:
        if not isinstance(value, list):
            self.problem(path, f"expected a list, got {_kind(value)}")
            return []
        items = [read(item, f"{path}[{i}]") for i, item in enumerate(value)]
        return [x for x in items if x is not None]

    def experiment(self, value: Any, path: str) -> Experiment | None:
        before = len(self.problems)
        spec = self.fields(
            value,
            path,
            ("id", "allocation_percent", "cells"),
            ("salt", "offset_percent", "match", "compatible_with"),
        )
        if spec is None:
            return None
        exp_id = self.string(spec.get("id"), f"{path}.id", _NAME, "experiment id") if "id" in spec else None
        if exp_id is not None:
            if exp_id in self.experiment_ids:
                self.problem(f"{path}.id", f"duplicate experiment id {exp_id!r} (also {self.experiment_ids[exp_id]})")
            else:
                self.experiment_ids[exp_id] = path
        salt = self.string(spec["salt"], f"{path}.salt") if "salt" in spec else exp_id
        allocation = (
            self.percent(spec["allocation_percent"], f"{path}.allocation_percent")
            if "allocation_percent" in spec
            else None
        )
        offset = self.percent(spec["offset_percent"], f"{path}.offset_percent") if "offset_percent" in spec else 0
        match = self.match(spec.get("match", {}), f"{path}.match")
        cells = self.cells(spec.get("cells"), f"{path}.cells") if "cells" in spec else None
        compatible: tuple[str, ...] = ()
        if "compatible_with" in spec:
            compatible = self.strings(spec["compatible_with"], f"{path}.compatible_with") or ()
        if len(self.problems) > before:
            return None
        assert exp_id is not None and salt is not None and allocation is not None and cells and offset is not None
        return Experiment(
            id=exp_id,
            salt=salt,
            allocation_percent=allocation,
            offset_percent=offset,
            cells=cells,
            match=MappingProxyType(match),
            compatible_with=compatible,
        )

    def match(self, value: Any, path: str) -> dict[str, tuple[str, ...]]:
        if not isinstance(value, Mapping):
            self.problem(path, f"expected an object, got {_kind(value)}")
            return {}
        out = {}
        for key, values in value.items():
            if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", key):
                self.problem(f"{path}.{key}", f"{key!r} is not a context field name or 'client'")
                continue
            accepted = self.strings(values, f"{path}.{key}")
            if accepted is not None:
                out[key] = accepted
        return out

    def cells(self, value: Any, path: str) -> tuple[Cell, ...] | None:
        if not isinstance(value, Mapping) or not value:
            self.problem(path, f"expected a non-empty object of cells, got {_kind(value)}")
            return None
        out = []
        for name, body in value.items():
            cpath = f"{path}.{name}"
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                self.problem(cpath, f"{name!r} is not a valid cell name")
                continue
            weight: Any = 1
            if isinstance(body, Mapping):
                spec = self.fields(body, cpath, ("model",), ("weight",))
                if spec is None or "model" not in spec:
                    continue
                model_value, weight = spec["model"], spec.get("weight", 1)
                mpath = f"{cpath}.model"
                if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
                    self.problem(f"{cpath}.weight", f"expected a positive integer, got {weight!r}")
                    continue
            else:
                model_value, mpath = body, cpath
            model = self.reference(model_value, mpath, self.model_names, "model")
            if model is not None:
                out.append(Cell(name, model, weight))
        return tuple(out) if len(out) == len(value) else None

    def canary(self, value: Any, path: str) -> Canary | None:
        spec = self.fields(value, path, ("model", "percent"))
        if spec is None or "model" not in spec or "percent" not in spec:
            return None
        model = self.reference(spec["model"], f"{path}.model", self.model_names, "model")
        percent = self.percent(spec["percent"], f"{path}.percent")
        if model is None or percent is None:
            return None
        return Canary(model=model, percent=percent)

    def shadow_entry(self, objective: str, value: Any, path: str) -> ShadowEntry | None:
        spec = self.fields(value, path, ("model", "percent"), ("salt",))
        if spec is None or "model" not in spec or "percent" not in spec:
            return None
        model = self.reference(spec["model"], f"{path}.model", self.model_names, "model")
        percent = self.percent(spec["percent"], f"{path}.percent")
        salt = self.string(spec["salt"], f"{path}.salt") if "salt" in spec else None
        if model is None or percent is None or ("salt" in spec and salt is None):
            return None
        return ShadowEntry(model=model, percent=percent, salt=salt or _default_shadow_salt(objective, model))


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return f"the string {value!r}" if value == "" else "a string"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__
