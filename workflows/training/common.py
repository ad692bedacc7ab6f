"""Shared pieces of the training scripts: the user population, Adam, metrics, writing."""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workflows.base import Item, Model
from workflows.facts import FactSpec, write_fact_npz

__all__ = [
    "COUNTRIES",
    "CURRENCY",
    "DEVICES",
    "FX_TO_USD",
    "Adam",
    "Population",
    "auc",
    "average_precision",
    "cli",
    "ndcg_at_k",
    "population",
    "sigmoid",
    "write_user_profile",
]

SEED = 20251123
"The seed the shipped packages were trained with."

COUNTRIES = ("US", "GB", "DE", "FR", "BR", "IN", "JP", "MX")
COUNTRY_SHARE = (0.30, 0.10, 0.10, 0.08, 0.12, 0.15, 0.08, 0.07)
DEVICES = ("tv", "mobile", "web")
DEVICE_SHARE = (0.45, 0.35, 0.20)
CURRENCY = {"US": "USD", "GB": "GBP", "DE": "EUR", "FR": "EUR", "BR": "BRL", "IN": "INR", "JP": "JPY", "MX": "MXN"}
FX_TO_USD = {"USD": 1.0, "EUR": 1.08, "GBP": 1.27, "BRL": 0.20, "INR": 0.012, "JPY": 0.0067, "MXN": 0.058}


@dataclass(frozen=True)
class Population:
    """The users both objectives share: ``u-0`` ... with a home country and a main device."""

    user_ids: list[str]
    country: np.ndarray  # index into COUNTRIES
    device: np.ndarray  # index into DEVICES


def population(seed: int, n_users: int = 5000) -> Population:
    """Users with a home country and device drawn from fixed market shares."""
    rng = np.random.default_rng([seed, 0])
    return Population(
        user_ids=[f"u-{i}" for i in range(n_users)],
        country=rng.choice(len(COUNTRIES), size=n_users, p=COUNTRY_SHARE),
        device=rng.choice(len(DEVICES), size=n_users, p=DEVICE_SHARE),
    )


USER_PROFILE = FactSpec(
    name="user_profile",
    columns=tuple(f"country={c}" for c in COUNTRIES) + tuple(f"device={d}" for d in DEVICES),
    default=np.zeros(len(COUNTRIES) + len(DEVICES)),
    key="user_id",
    description="One-hot home country and main device of each user; an unknown user is all zeros (no home).",
)


def write_user_profile(facts_dir: Path, pop: Population) -> Path:
    """Write the ``user_profile`` fact (identical from both training scripts)."""
    values = np.zeros((len(pop.user_ids), USER_PROFILE.width), dtype=np.float32)
    values[np.arange(len(pop.user_ids)), pop.country] = 1.0
    values[np.arange(len(pop.user_ids)), len(COUNTRIES) + pop.device] = 1.0
    return write_fact_npz(facts_dir, USER_PROFILE, pop.user_ids, values, dtype=np.uint8)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function."""
    out: np.ndarray = 1.0 / (1.0 + np.exp(-x))
    return out


class Adam:
    """Adam over a dict of parameter arrays, updated in place."""

    def __init__(self, params: Mapping[str, np.ndarray], lr: float = 0.01, l2: float = 0.0) -> None:
        self.params = params
        self.lr, self.l2 = lr, l2
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, grads: Mapping[str, np.ndarray]) -> None:
        """Apply one update from ``grads`` (same keys as the parameters)."""
        self.t += 1
        b1, b2 = 0.9, 0.999
        for k, g in grads.items():
            g = g + self.l2 * self.params[k]
            self.m[k] = b1 * self.m[k] + (1 - b1) * g
            self.v[k] = b2 * self.v[k] + (1 - b2) * g * g
            m_hat = self.m[k] / (1 - b1**self.t)
            v_hat = self.v[k] / (1 - b2**self.t)
            self.params[k] -= self.lr * m_hat / (np.sqrt(v_hat) + 1e-8)


def ndcg_at_k(ranked_gains: list[np.ndarray], all_gains: list[np.ndarray], k: int = 10) -> float:
    """Mean NDCG@k over queries with any gain: ranked gains against the ideal order."""
    scores = []
    for ranked, gains in zip(ranked_gains, all_gains, strict=True):
        ideal = np.sort(gains)[::-1][:k]
        if ideal.sum() <= 0:
            continue
        discount = 1.0 / np.log2(np.arange(2, k + 2))
        scores.append(float((ranked[:k] * discount[: len(ranked[:k])]).sum() / (ideal * discount[: len(ideal)]).sum()))
    return float(np.mean(scores))


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (ties count half)."""
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    sorted_scores = score[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, counts)
    pos = y.astype(bool)
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(y: np.ndarray, score: np.ndarray) -> float:
    """Average precision (area under the precision-recall curve, step-wise)."""
    order = np.argsort(-score, kind="mergesort")
    hits = y[order].astype(np.float64)
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / hits.sum())


def cli(description: str) -> argparse.Namespace:
    """Parse the common arguments: ``--out``, ``--seed``, ``--date``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=Path("scoreline/examples"),
                        help="writes <out>/models and <out>/facts (default: the shipped example configuration)")
    parser.add_argument("--seed", type=int, default=SEED, help=f"random seed (default {SEED})")
    parser.add_argument("--date", default=dt.date.today().isoformat(), help="training date for the manifest")
    return parser.parse_args()


def probability_metrics(model: Model, items: Sequence[Item], labels: np.ndarray) -> dict[str, float]:
    """ROC AUC and average precision of ``model``'s ``probability`` on held-out ``items``, scored as served.

    Raises:
        RuntimeError: the model failed on a held-out item (a bug to fix before shipping it).
    """
    outcomes = model.score_batch(items)
    values = [o.value for o in outcomes if o.value is not None]
    if len(values) != len(outcomes):
        raise RuntimeError(f"{model.id} failed on held-out items: {[o.error for o in outcomes if o.error][:3]}")
    p = np.array([v["probability"] for v in values])
    return {"auc": round(auc(labels, p), 6), "average_precision": round(average_precision(labels, p), 6)}
