"""How far a candidate model's output agrees with the primary's, for one request.

Pure functions over two workflow outputs (the ``result`` objects of a primary
and a shadow :class:`~schemas.messages.ShadowResult`); the comparator calls
:func:`agreement` once per pair and the analysts read its keys. The kind of
measure follows the shape of the output, so any objective whose workflow
returns a ranking or a probability is compared without configuration:

``{"ranking": [{"title", "score"}, ...]}`` gives (kind ``ranking``)::

    top_k            k: the length of the shorter ranking
    top_k_overlap    |top k of primary ∩ top k of shadow| / k, in [0, 1]
    top1_agrees      whether both put the same item first
    common           items both rankings hold
    kendall_tau      Kendall's tau-a of the two orders over the common items
                     (None with fewer than two); 1 same order, -1 reversed
    score_delta_mean       mean of shadow score - primary score over common items
    score_delta_mean_abs   mean of |shadow score - primary score|
    score_delta_max_abs    max of |shadow score - primary score|

``{"probability": p, "band": b}`` gives (kind ``probability``)::

    primary_probability, shadow_probability
    delta            shadow - primary
    abs_diff         |shadow - primary|
    primary_band, shadow_band
    band_agrees      whether the decision bands are the same (None without bands)

Any other output gives ``{"kind": "other", "equal": <outputs identical>}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["AgreementKind", "agreement", "kendall_tau", "probability_agreement", "ranking_agreement"]


class AgreementKind:
    """The ``kind`` of an agreement record: which measures it holds."""

    RANKING = "ranking"
    "Two rankings of items: overlap, rank correlation, score deltas."

    PROBABILITY = "probability"
    "Two probabilities with decision bands: difference, band agreement."

    OTHER = "other"
    "Outputs of another shape: only whether they are equal."


def agreement(primary: Mapping[str, Any], shadow: Mapping[str, Any]) -> dict[str, Any]:
    """The agreement measures of two outputs of the same objective, chosen by their shape."""
    if isinstance(primary.get("ranking"), list) and isinstance(shadow.get("ranking"), list):
        return ranking_agreement(primary["ranking"], shadow["ranking"])
    if _is_number(primary.get("probability")) and _is_number(shadow.get("probability")):
        return probability_agreement(primary["probability"], shadow["probability"],
                                     primary.get("band"), shadow.get("band"))
    return {"kind": AgreementKind.OTHER, "equal": dict(primary) == dict(shadow)}


def ranking_agreement(primary: Sequence[Mapping[str, Any]], shadow: Sequence[Mapping[str, Any]],
                      *, item_key: str = "title") -> dict[str, Any]:
    """Overlap, rank correlation and score deltas of two rankings (best first)."""
    p_items = [entry[item_key] for entry in primary]
    s_items = [entry[item_key] for entry in shadow]
    k = min(len(p_items), len(s_items))
    overlap = len(set(p_items[:k]) & set(s_items[:k])) / k if k else None
    p_score = {entry[item_key]: float(entry["score"]) for entry in primary}
    s_score = {entry[item_key]: float(entry["score"]) for entry in shadow}
    s_rank = {item: rank for rank, item in enumerate(s_items)}
    # Common items in primary order; their shadow positions decide concordance.
    common = [item for item in p_items if item in s_rank]
    deltas = [s_score[item] - p_score[item] for item in common]
    return {
        "kind": AgreementKind.RANKING,
        "top_k": k,
        "top_k_overlap": overlap,
        "top1_agrees": bool(k) and p_items[0] == s_items[0],
        "common": len(common),
        "kendall_tau": kendall_tau([s_rank[item] for item in common]),
        "score_delta_mean": sum(deltas) / len(deltas) if deltas else None,
        "score_delta_mean_abs": sum(abs(d) for d in deltas) / len(deltas) if deltas else None,
        "score_delta_max_abs": max(abs(d) for d in deltas) if deltas else None,
    }


def kendall_tau(order: Sequence[float]) -> float | None:
    """Kendall's tau-a between positions ``0..n-1`` and ``order`` (None for fewer than two items).

    Rankings list each item once, so there are no ties and tau-a is tau-b.
    Quadratic, which is fine for the tens of items a ranking returns.
    """
    n = len(order)
    if n < 2:
        return None
    score = 0
    for i in range(n - 1):
        oi = order[i]
        for j in range(i + 1, n):
            score += 1 if order[j] > oi else -1 if order[j] < oi else 0
    return score / (n * (n - 1) / 2)


def probability_agreement(primary: float, shadow: float, primary_band: str | None = None,
                          shadow_band: str | None = None) -> dict[str, Any]:
    """Difference of two probabilities and whether their decision bands agree."""
    delta = float(shadow) - float(primary)
    both_banded = primary_band is not None and shadow_band is not None
    return {
        "kind": AgreementKind.PROBABILITY,
        "primary_probability": float(primary),
        "shadow_probability": float(shadow),
        "delta": delta,
        "abs_diff": abs(delta),
        "primary_band": primary_band,
        "shadow_band": shadow_band,
        "band_agrees": primary_band == shadow_band if both_banded else None,
    }


def _is_number(value: Any) -> bool:
    return type(value) in (int, float)
