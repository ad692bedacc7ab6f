"""What share of users each model gets under a rules snapshot: routed synthetic users against the expected shares."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from routing.allocation import BUCKETS
from routing.errors import RoutingError
from routing.explain import jsonable
from routing.route import RequestView, experiment_matches, route
from routing.rules import Objective, Rules
from schemas.errors import ErrorCode

__all__ = ["expected_shares", "simulate"]


def expected_shares(rules: Rules, objective: str) -> dict[str, float]:
    """Each model's expected share of ``objective``'s requests as the primary, from the rules alone.

    As :func:`simulate` computes ``expected`` with its default client and context: every
    experiment counts as matching, so a ``match``-restricted experiment's cells get their
    whole range (an upper bound on their share).
    """
    obj = rules.objective(objective)
    return _expected_primary(obj, _pick_client(rules, obj), _matching_context(obj))


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
        "context": jsonable(context),
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
    matched = [e for e in obj.experiments if not e.match_sets or experiment_matches(e, view)]
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

