"""Routing decisions: ``route(view, rules) -> Decision``, and tools that explain them.

:func:`route` is the router's hot path: a pure function of the request's
routing fields and a rules snapshot, with no I/O, clock or randomness. The
same request routed by any router, before or after a restart, gets the same
decision.

Precedence, first that applies wins:

1. client override -- the request names ``model`` and its client is in the
   objective's ``override_clients``;
2. experiment cell -- the first experiment (in document order) whose bucket
   range holds the user and whose ``match`` holds for the request;
3. canary -- the user's bucket is in the canary's top range;
4. the objective's default.

A request without a shard key cannot be allocated deterministically (hashing
the request id would flip a user between models), so it gets the objective's
default model: no experiment, no canary. Shadow copies are still sampled
(they are per request).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from schemas.errors import ErrorCode

from routing.allocation import BUCKETS, bucket_of
from routing.errors import RoutingError
from routing.rules import Experiment, Objective, Rules

__all__ = [
    "Decision",
    "RequestView",
    "explain",
    "extract_shard_key",
    "route",
    "simulate",
]

_CONTEXT_PREFIX = "context."


class RequestView(NamedTuple):
    """The fields of a request that routing reads (from headers or the body)."""

    request_id: str
    "Request id; shadow sampling is keyed by it."
    objective: str
    "Objective the client asks for."
    client: str
    "Client name."
    reply_to: str
    "Topic the client wants its result on."
    shard_key: str | None
    "Shard key value (e.g. the user id); None when the request has none."
    context: Mapping[str, Any] | None = None
    "The request context; None when the router routed from headers only."
    model: str | None = None
    "Model override named by the client (honoured only for override clients)."


class Decision(NamedTuple):
    """Where a request goes, and why."""

    objective: str
    "Objective of the request."
    model: str
    "Model id that serves the primary result."
    shard: str
    "Shard the model is deployed on (work topic ``scoreline.shard.<shard>``)."
    cell: str | None
    "Experiment cell, when an experiment decided."
    reason: str
    "``override``, ``experiment:<id>``, ``canary`` or ``default``."
    bucket: int | None
    "The user's bucket in the objective's allocation space; None without a shard key or on override."
    shadows: tuple[str, ...]
    "Candidate models this request is copied to (never ``model``)."
    rules_version: int
    "Version of the rules that decided."
    shard_key: str | None
    "Shard key the decision was made for (the record key on the shard topic)."


def extract_shard_key(context: Mapping[str, Any], path: str) -> str | None:
    """Return the shard key at ``path`` (``context.user_id``) in ``context``.

    Nested paths (``context.account.id``) walk nested objects. Strings are
    returned as they are; other scalars are stringified (``42`` -> ``"42"``,
    ``true`` -> ``"true"``). Missing, null, empty, or non-scalar values give
    None.
    """
    if not path.startswith(_CONTEXT_PREFIX):
        raise ValueError(f"shard key path must start with 'context.', got {path!r}")
    value: Any = context
    for part in path[len(_CONTEXT_PREFIX) :].split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return _scalar_str(value) or None


def _scalar_str(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return None


def _matches(exp: Experiment, view: RequestView) -> bool:
    context = view.context
    for key, accepted in exp.match_sets:
        if key == "client":
            value: str | None = view.client
        else:
            if context is None:
                raise ValueError(
                    f"experiment {exp.id!r} matches on context field {key!r} but the request "
                    f"view has no context; route from the body when Rules.needs_context() is True"
                )
            value = _scalar_str(context.get(key))
        if value not in accepted:
            return False
    return True


def _check_access(view: RequestView, rules: Rules) -> Objective:
    policy = rules.clients.get(view.client)
    if policy is None:
        raise RoutingError(ErrorCode.UNKNOWN_CLIENT, f"unknown client {view.client!r}", "client")
    if not policy.allows_reply_to(view.reply_to):
        raise RoutingError(
            ErrorCode.FORBIDDEN_REPLY_TO,
            f"client {view.client!r} may not receive results on reply_to {view.reply_to!r}",
            "reply_to",
        )
    obj = rules.objectives.get(view.objective)
    if obj is None:
        raise RoutingError(ErrorCode.UNKNOWN_OBJECTIVE, f"unknown objective {view.objective!r}", "objective")
    if not policy.allows_objective(obj.name):
        raise RoutingError(
            ErrorCode.FORBIDDEN_OBJECTIVE,
            f"client {view.client!r} may not call objective {obj.name!r}",
            "objective",
        )
    if view.model:
        if view.client not in obj.override_set:
            raise RoutingError(
                ErrorCode.FORBIDDEN_OVERRIDE,
                f"client {view.client!r} may not override the model of objective {obj.name!r}",
                "model",
            )
        if view.model not in rules.models:
            raise RoutingError(ErrorCode.UNKNOWN_MODEL, f"unknown model {view.model!r}", "model")
    return obj


def route(view: RequestView, rules: Rules) -> Decision:
    """Decide which model serves ``view`` under ``rules``, and which candidates shadow it.

    The checks, in order: the client exists (``unknown_client``, field
    ``client``); it may use ``reply_to`` (``forbidden_reply_to``); the
    objective exists (``unknown_objective``) and the client may call it
    (``forbidden_objective``); an override ``model`` is allowed
    (``forbidden_override``) and deployed (``unknown_model``). Each failure
    raises :class:`RoutingError` with that code and field.

    When ``view.shard_key`` is None and ``view.context`` is given, the key is
    read from the context at the objective's ``shard_key`` path. Raises
    ``ValueError`` when an experiment needs context fields and
    ``view.context`` is None (a router bug: see :meth:`Rules.needs_context`).
    """
    obj = _check_access(view, rules)
    key = view.shard_key
    if key is None and view.context is not None:
        key = extract_shard_key(view.context, obj.shard_key)

    cell: str | None = None
    bucket: int | None = None
    if view.model:
        model, reason = view.model, "override"
    else:
        model, reason = obj.default, "default"
        if key is not None:
            bucket = bucket_of(obj.salt, key)
            for exp in obj.experiments:
                if exp.start <= bucket < exp.end and (not exp.match_sets or _matches(exp, view)):
                    chosen = exp.cell_for(bucket_of(exp.salt, key))
                    model, cell, reason = chosen.model, chosen.name, f"experiment:{exp.id}"
                    break
            else:
                canary = obj.canary
                if canary is not None and bucket >= canary.start:
                    model, reason = canary.model, "canary"

    shadows: tuple[str, ...] = ()
    if obj.shadow:
        shadows = tuple(
            s.model
            for s in obj.shadow
            if s.model != model
            and (s.threshold >= BUCKETS or (s.threshold > 0 and bucket_of(s.salt, view.request_id) < s.threshold))
        )
    return Decision(
        objective=obj.name,
        model=model,
        shard=rules.models[model],
        cell=cell,
        reason=reason,
        bucket=bucket,
        shadows=shadows,
        rules_version=rules.version,
        shard_key=key,
    )


# ---------------------------------------------------------------- explain


def explain(view: RequestView, rules: Rules) -> dict[str, Any]:
    """Return the decision for ``view`` and every step that led to it, as JSON-ready data.

    The keys: ``request`` (the view), ``rules_version``, ``decision`` (the
    :class:`Decision` as an object, or null), ``error`` (``{code, message,
    field}`` when the request is rejected, else null), and when the objective
    is known: ``objective``, ``shard_key`` (path and value), ``override``,
    ``allocation`` (salt and bucket), ``experiments`` (per experiment: bucket
    range, whether the user is in it, whether ``match`` held, field by field,
    the cell bucket and cell, and whether it decided), ``canary``,
    ``default`` and ``shadow`` (per entry: its sample bucket, whether the
    request was sampled, whether it was copied). Deterministic: the same
    inputs give an equal result.
    """
    out: dict[str, Any] = {
        "request": {
            "request_id": view.request_id,
            "objective": view.objective,
            "client": view.client,
            "reply_to": view.reply_to,
            "shard_key": view.shard_key,
            "model": view.model,
            "context": _jsonable(view.context),
        },
        "rules_version": rules.version,
        "decision": None,
        "error": None,
    }
    try:
        decision = route(view, rules)
    except RoutingError as exc:
        out["error"] = {"code": exc.code, "message": exc.message, "field": exc.field}
        return out
    out["decision"] = decision._asdict() | {"shadows": list(decision.shadows)}
    obj = rules.objectives[decision.objective]
    key = decision.shard_key
    out["objective"] = obj.name
    out["shard_key"] = {"path": obj.shard_key, "value": key}
    out["override"] = {
        "requested": view.model or None,
        "allowed": view.client in obj.override_set,
        "applied": decision.reason == "override",
    }
    bucket = bucket_of(obj.salt, key) if key is not None else None
    out["allocation"] = {"salt": obj.salt, "bucket": bucket}
    experiments = []
    for exp in obj.experiments:
        entry: dict[str, Any] = {
            "id": exp.id,
            "buckets": [exp.start, exp.end],
            "in_allocation": bucket is not None and exp.start <= bucket < exp.end,
            "match": _explain_match(exp, view),
        }
        if key is not None:
            cell_bucket = bucket_of(exp.salt, key)
            chosen = exp.cell_for(cell_bucket)
            entry.update(
                cell_salt=exp.salt, cell_bucket=cell_bucket, cell=chosen.name, model=chosen.model
            )
        entry["decided"] = decision.reason == f"experiment:{exp.id}"
        experiments.append(entry)
    out["experiments"] = experiments
    if obj.canary is not None:
        out["canary"] = {
            "model": obj.canary.model,
            "percent": obj.canary.percent,
            "buckets": [obj.canary.start, BUCKETS],
            "in_canary": bucket is not None and bucket >= obj.canary.start,
            "decided": decision.reason == "canary",
        }
    else:
        out["canary"] = None
    out["default"] = {"model": obj.default, "decided": decision.reason == "default"}
    out["shadow"] = [
        {
            "model": s.model,
            "percent": s.percent,
            "salt": s.salt,
            "bucket": bucket_of(s.salt, view.request_id),
            "sampled": s.threshold >= BUCKETS or bucket_of(s.salt, view.request_id) < s.threshold,
            "same_as_primary": s.model == decision.model,
            "copied": s.model in decision.shadows,
        }
        for s in obj.shadow
    ]
    return out


def _explain_match(exp: Experiment, view: RequestView) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    held: bool | None = True
    for key, values in exp.match.items():
        if key == "client":
            value: str | None = view.client
        elif view.context is None:
            fields[key] = {"value": None, "accepted": list(values), "held": None}
            held = None
            continue
        else:
            value = _scalar_str(view.context.get(key))
        ok = value in values
        fields[key] = {"value": value, "accepted": list(values), "held": ok}
        if not ok:
            held = False
    return {"held": held, "fields": fields}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


# ---------------------------------------------------------------- simulate


def simulate(
    rules: Rules,
    objective: str,
    users: int,
    *,
    context: Mapping[str, Any] | None = None,
    client: str | None = None,
) -> dict[str, Any]:
    """Route ``users`` synthetic users through :func:`route`; compare shares with the rules.

    Users are ``u-0`` .. ``u-{users-1}`` (the shard key; request ids are
    ``sim-<i>``). Returns ``{"objective", "users", "rules_version", "client",
    "context", "models": {model: {"observed", "expected"}}, "shadow": {model:
    {"observed", "expected"}}}`` with shares of all users, rounded to 4
    places; every model the objective can route to is listed.

    ``expected`` folds in every path to a model given the context: the
    objective's bucket space is walked bucket by bucket with the same
    precedence as :func:`route` (experiments whose ``match`` fails for this
    context and client contribute nothing), and a shadow's expected share is
    its percent times the share of requests whose primary is another model.

    ``client`` defaults to the first client (document order) allowed to call
    the objective, preferring one that some experiment's ``client`` match
    accepts. ``context`` defaults to the one that matches the most
    experiments: for each experiment in document order, its first accepted
    value of every context field not yet set. Raises ``RoutingError`` when no
    client may call the objective or the given client is rejected.
    """
    obj = rules.objective(objective)
    if context is None:
        context = _matching_context(obj)
    if client is None:
        client = _pick_client(rules, obj)
    policy = rules.clients.get(client)
    reply_to = _reply_topic(policy.reply_topics) if policy is not None else ""

    counts: dict[str, int] = {}
    shadow_counts: dict[str, int] = {s.model: 0 for s in obj.shadow}
    for i in range(users):
        d = route(RequestView(f"sim-{i}", objective, client, reply_to, f"u-{i}", context), rules)
        counts[d.model] = counts.get(d.model, 0) + 1
        for m in d.shadows:
            shadow_counts[m] += 1

    expected = _expected_primary(obj, client, context)
    models = {
        m: {"observed": round(counts.get(m, 0) / users, 4) if users else 0.0, "expected": round(p, 4)}
        for m, p in expected.items()
    }
    for m, n in counts.items():
        models.setdefault(m, {"observed": round(n / users, 4), "expected": 0.0})
    shadow = {
        s.model: {
            "observed": round(shadow_counts[s.model] / users, 4) if users else 0.0,
            "expected": round(s.threshold / BUCKETS * (1 - expected.get(s.model, 0.0)), 4),
        }
        for s in obj.shadow
    }
    return {
        "objective": obj.name,
        "users": users,
        "rules_version": rules.version,
        "client": client,
        "context": _jsonable(context),
        "models": models,
        "shadow": shadow,
    }


def _matching_context(obj: Objective) -> dict[str, Any]:
    context: dict[str, Any] = {}
    for exp in obj.experiments:
        for key, values in exp.match.items():
            if key != "client":
                context.setdefault(key, values[0])
    return context


def _pick_client(rules: Rules, obj: Objective) -> str:
    allowed = [c.name for c in rules.clients.values() if c.allows_objective(obj.name)]
    if not allowed:
        raise RoutingError(
            ErrorCode.FORBIDDEN_OBJECTIVE, f"no client may call objective {obj.name!r}", "client"
        )
    for exp in obj.experiments:
        accepted = exp.match.get("client")
        if accepted:
            for name in allowed:
                if name in accepted:
                    return name
    return allowed[0]


def _reply_topic(patterns: tuple[str, ...]) -> str:
    # A prefix pattern "p*" accepts "p" itself.
    return patterns[0].removesuffix("*")


def _expected_primary(obj: Objective, client: str, context: Mapping[str, Any]) -> dict[str, float]:
    view = RequestView("", obj.name, client, "", None, context)
    matched = [e for e in obj.experiments if not e.match_sets or _matches(e, view)]
    owners: dict[str, int] = {}  # "exp:<id>" / "canary" / "default" -> buckets
    canary_start = obj.canary.start if obj.canary is not None else BUCKETS
    for b in range(BUCKETS):
        for exp in matched:
            if exp.start <= b < exp.end:
                owner = exp.id
                break
        else:
            owner = "\x00canary" if b >= canary_start else "\x00default"
        owners[owner] = owners.get(owner, 0) + 1

    shares: dict[str, float] = {obj.default: 0.0}
    for exp in obj.experiments:
        for c in exp.cells:
            shares.setdefault(c.model, 0.0)
    if obj.canary is not None:
        shares.setdefault(obj.canary.model, 0.0)
    by_id = {e.id: e for e in matched}
    for owner, n in owners.items():
        share = n / BUCKETS
        if owner == "\x00default":
            shares[obj.default] += share
        elif owner == "\x00canary":
            shares[obj.canary.model] += share  # type: ignore[union-attr]
        else:
            exp = by_id[owner]
            lower = 0
            for c, bound in zip(exp.cells, exp.cell_bounds):
                shares[c.model] += share * (bound - lower) / BUCKETS
                lower = bound
    return shares

