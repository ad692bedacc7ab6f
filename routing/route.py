"""Routing decisions: ``route(view, rules) -> Decision``.

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

Why a decision was made is told by :func:`routing.explain`; the shares a
rules snapshot gives each model by :func:`routing.simulate`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from routing.allocation import bucket_of
from routing.errors import RoutingError
from routing.rules import Experiment, Objective, Rules
from schemas.errors import ErrorCode

__all__ = [
    "Decision",
    "RequestView",
    "extract_shard_key",
    "route",
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
    return scalar_str(value) or None


def scalar_str(value: Any) -> str | None:
    """The text a JSON scalar matches as (``true``, ``42``); None for null, objects and lists."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return None


def experiment_matches(exp: Experiment, view: RequestView) -> bool:
    """Tell whether ``view`` holds every field of ``exp.match`` (``client`` or a context field)."""
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
            value = scalar_str(context.get(key))
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
                if exp.start <= bucket < exp.end and (not exp.match_sets or experiment_matches(exp, view)):
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
            if s.model != model and s.samples(view.request_id)
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
