"""The comparator's join, as pure functions over one request's pairing state.

The faust app in :mod:`streams.services.comparator` keeps one :data:`Entry` per
request id in a changelogged table and calls :func:`absorb` for every side
that arrives and :func:`expire` on every timer tick; both return the new
entry and the comparisons to publish. Nothing here touches Kafka, so the
join is tested without a broker.

An entry stays in the table after its last comparison, *closed* (sides
dropped, ``closed_ms`` set), for ``retention_ms``: a side replayed after a
restart then finds it closed and is ignored instead of opening a new pair.
"""

from __future__ import annotations

from typing import Any

import orjson

from schemas import codec
from schemas.messages import Comparison, Role, ShadowResult, Status, Unmatched
from workflows.agreement import agreement

__all__ = ["Entry", "absorb", "compare", "expire"]

Entry = dict[str, Any]
"""One request's pairing state, JSON-serialisable for the table's changelog::

    {"p": partition, "first_ms": ts of the first side, "expected": [shadow models],
     "primary": side | None, "shadows": {model: side}, "done": [models compared],
     "closed_ms": None | ms}

Sides are kept as their decoded JSON objects.
"""


def absorb(entry: Entry | None, side: ShadowResult, body: dict[str, Any], *, partition: int
           ) -> tuple[Entry | None, list[Comparison]]:
    """Add one side to its request's entry; return the new entry and the pairs it completed.

    A side for a closed entry, or for a shadow model already compared, is a
    replay (or arrived after its window closed) and changes nothing.
    """
    if entry is not None and entry["closed_ms"] is not None:
        return entry, []
    if entry is None:
        entry = {"p": partition, "first_ms": side.ts_ms, "expected": [], "primary": None, "shadows": {},
                 "done": [], "closed_ms": None}
    else:
        entry = {**entry, "shadows": dict(entry["shadows"]), "done": list(entry["done"])}
    # Either side names every candidate the request was copied to.
    entry["expected"] = sorted(set(entry["expected"]) | set(side.shadow_models)
                               | ({side.model} if side.role == Role.SHADOW else set()))
    if side.role == Role.PRIMARY:
        if entry["primary"] is not None:
            return entry, []
        entry["primary"] = body
    else:
        if side.model in entry["done"] or side.model in entry["shadows"]:
            return entry, []
        entry["shadows"][side.model] = body
    out: list[Comparison] = []
    if entry["primary"] is not None:
        primary = _side(entry["primary"])
        for model in sorted(entry["shadows"]):
            out.append(compare(primary, _side(entry["shadows"].pop(model))))
            entry["done"].append(model)
    if set(entry["expected"]) <= set(entry["done"]) and entry["primary"] is not None:
        _close(entry, max([c.ts_ms for c in out] + [entry["first_ms"]]))
    return entry, out


def expire(entry: Entry, now_ms: int, *, window_ms: int, retention_ms: int) -> tuple[Entry | None, list[Comparison]]:
    """Close an entry whose window passed, emitting ``timed_out`` comparisons; None deletes it.

    Returns the entry unchanged (and no comparisons) while its window is open.
    """
    if entry["closed_ms"] is not None:
        return (None if now_ms - entry["closed_ms"] > retention_ms else entry), []
    if now_ms - entry["first_ms"] <= window_ms:
        return entry, []
    primary = _side(entry["primary"]) if entry["primary"] is not None else None
    out = []
    for model in entry["expected"]:
        if model in entry["done"]:
            continue
        body = entry["shadows"].get(model)
        out.append(_timed_out(primary, _side(body) if body is not None else None, model, now_ms))
    entry = {**entry, "done": entry["expected"]}
    _close(entry, now_ms)
    return entry, out


def compare(primary: ShadowResult, shadow: ShadowResult) -> Comparison:
    """The comparison of two sides that both arrived.

    Its ``ts_ms`` is the later side's, so a replayed pair yields the same bytes.
    """
    both_ok = primary.status == Status.OK and shadow.status == Status.OK
    measures = agreement(primary.result or {}, shadow.result or {}) if both_ok else {}
    reason = None if both_ok else (Unmatched.PRIMARY_FAILED if primary.status != Status.OK
                                   else Unmatched.SHADOW_FAILED)
    return _comparison(primary, primary, shadow, shadow.model, matched=both_ok, reason=reason,
                       agreement_=measures, ts_ms=max(primary.ts_ms, shadow.ts_ms))


def _timed_out(primary: ShadowResult | None, shadow: ShadowResult | None, model: str, now_ms: int) -> Comparison:
    known = primary or shadow
    assert known is not None
    return _comparison(known, primary, shadow, model, matched=False, reason=Unmatched.TIMED_OUT,
                       agreement_={}, ts_ms=now_ms)


def _comparison(known: ShadowResult, primary: ShadowResult | None, shadow: ShadowResult | None, model: str, *,
                matched: bool, reason: str | None, agreement_: dict[str, Any], ts_ms: int) -> Comparison:
    return Comparison(
        request_id=known.request_id, objective=known.objective, primary_model=known.primary_model,
        shadow_model=model, matched=matched, reason=reason, rules_version=known.rules_version,
        cell=known.cell, primary_status=primary.status if primary else None,
        shadow_status=shadow.status if shadow else None,
        primary_latency_ms=primary.latency_ms if primary else None,
        shadow_latency_ms=shadow.latency_ms if shadow else None,
        agreement=agreement_, traffic=known.traffic, context=known.context, ts_ms=ts_ms,
    )


def _close(entry: Entry, closed_ms: int) -> None:
    entry.update(primary=None, shadows={}, closed_ms=closed_ms)


def _side(body: dict[str, Any]) -> ShadowResult:
    return codec.decode_shadow_result(orjson.dumps(body))
