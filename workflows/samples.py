"""Realistic inputs for the demo, the bench and the tests.

Users come from the facts (``user_profile`` gives each its home country and
device), titles from ``title_availability``; a few ids are deliberately
unknown, so that defaults and ``unknown_titles`` show up in every run.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from workflows.base import Item
from workflows.facts import InMemoryFactStore
from workflows.registry import default_facts_dir
from workflows.training.common import CURRENCY as _CURRENCY
from workflows.training.common import FX_TO_USD as _FX_TO_USD
from workflows.training.fraud_score import CATEGORIES as _CATEGORIES
from workflows.training.reference import OBJECTIVES as _REFERENCE_OBJECTIVES
from workflows.training.reference import reference_items

__all__ = ["OBJECTIVES", "sample_items"]

_PLANS = ("basic", "standard", "premium")
_PRICE = {"basic": 9.0, "standard": 15.0, "premium": 22.0}

OBJECTIVES = ("title-ranking", "fraud-score", "churn-risk", *_REFERENCE_OBJECTIVES)
"The objectives :func:`sample_items` can make inputs for: the examples' and the reference models'."

_SURFACES = ("home", "search", "detail")


@functools.lru_cache(maxsize=4)
def _population(facts_dir: Path) -> tuple[list[str], list[str], list[str], list[str], np.ndarray]:
    store = InMemoryFactStore.from_dir(facts_dir)
    users = list(store.keys("user_profile"))
    spec = store.spec("user_profile")
    onehot = store.lookup("user_profile", users).values
    countries = [c.split("=", 1)[1] for c in spec.columns if c.startswith("country=")]
    devices = [c.split("=", 1)[1] for c in spec.columns if c.startswith("device=")]
    country = [countries[i] for i in onehot[:, : len(countries)].argmax(axis=1)]
    device = [devices[i] for i in onehot[:, len(countries) :].argmax(axis=1)]
    titles = list(store.keys("title_availability")) if "title_availability" in store.facts() else []
    mean_amount = (
        store.lookup("user_txn_history", users).values[:, 0]
        if "user_txn_history" in store.facts()
        else np.full(len(users), 30.0)
    )
    return users, country, device, titles, mean_amount


def sample_items(
    objective: str,
    n: int,
    seed: int = 0,
    *,
    titles_per_item: int = 20,
    unknown_rate: float = 0.03,
    facts_dir: str | Path | None = None,
) -> list[Item]:
    """``n`` realistic items for ``objective`` (one of :data:`OBJECTIVES`).

    Deterministic for a given ``seed``. About ``unknown_rate`` of the users
    (and, for ranking, of the title ids) are not in the facts. The reference
    objectives' items come from :func:`workflows.training.reference.reference_items`.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"no samples for objective {objective!r}; have {', '.join(OBJECTIVES)}")
    if objective in _REFERENCE_OBJECTIVES:
        return reference_items(objective, n, seed)
    users, country, device, titles, mean_amount = _population(Path(facts_dir or default_facts_dir()).resolve())
    rng = np.random.default_rng([seed, 7])
    picks = rng.integers(len(users), size=n)
    new = rng.random(n) < unknown_rate
    items = []
    for i in range(n):
        u = int(picks[i])
        context = {
            "user_id": f"u-new-{seed}-{i}" if new[i] else users[u],
            "country": country[u],
            "device": device[u],
            "surface": str(_SURFACES[rng.integers(len(_SURFACES))]) if objective == "title-ranking" else "checkout",
        }
        if objective == "churn-risk":
            context["surface"] = "account"
            plan = _PLANS[int(rng.choice(len(_PLANS), p=(0.5, 0.35, 0.15)))]
            tenure = int(min(120, np.floor(np.exp(rng.normal(2.3, 1.0)))))
            items.append(Item(context, {
                "tenure_months": tenure,
                "monthly_spend": round(_PRICE[plan] * float(np.exp(rng.normal(0.0, 0.25))), 2),
                "support_tickets_90d": int(rng.poisson(0.6 + 0.8 * (tenure < 6))),
                "plan": plan,
                "autopay": bool(rng.random() < 0.6),
            }))
            continue
        if objective == "title-ranking":
            chosen = rng.choice(len(titles), size=min(titles_per_item, len(titles)), replace=False)
            ids = [titles[j] for j in chosen]
            for j in np.flatnonzero(rng.random(len(ids)) < unknown_rate):
                ids[j] = f"t-unknown-{seed}-{i}-{j}"
            payload: dict[str, Any] = {"titles": ids}
        else:
            abroad = rng.random() < 0.08
            where = str(rng.choice(list(_CURRENCY))) if abroad else country[u]
            context["country"] = where
            currency = _CURRENCY[where]
            usd = float(mean_amount[u]) * float(np.exp(rng.normal(0.0, 0.7)))
            payload = {
                "amount": round(usd / _FX_TO_USD[currency], 0 if currency == "JPY" else 2) or 1.0,
                "currency": currency,
                "merchant_category": _CATEGORIES[rng.integers(len(_CATEGORIES))],
                "card_present": bool(rng.random() < 0.7),
            }
        items.append(Item(context, payload))
    return items
