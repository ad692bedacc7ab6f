"""Rules back to JSON: the document :func:`routing.parse_rules` reads to equal rules."""

from __future__ import annotations

from typing import Any

from routing.rules import ClientPolicy, Experiment, Objective, Rules, default_shadow_salt

__all__ = ["rules_to_doc"]


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
            if s.salt != default_shadow_salt(o.name, s.model):
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

