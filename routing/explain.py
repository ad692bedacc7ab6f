"""Why a request is routed where it is: every step of :func:`routing.route`, as JSON-ready data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from routing.allocation import BUCKETS, bucket_of
from routing.errors import RoutingError
from routing.route import RequestView, route, scalar_str
from routing.rules import Experiment, Rules

__all__ = ["explain", "jsonable"]


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
            "context": jsonable(view.context),
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
            "sampled": s.samples(view.request_id),
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
            value = scalar_str(view.context.get(key))
        ok = value in values
        fields[key] = {"value": value, "accepted": list(values), "held": ok}
        if not ok:
            held = False
    return {"held": held, "fields": fields}


def jsonable(value: Any) -> Any:
    """``value`` with mappings as string-keyed dicts, sequences as lists and anything else not JSON as its repr."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)
