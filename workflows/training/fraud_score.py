"""Train ``fraud-score@v1`` and ``@v2`` on synthetic card payments.

Generative process (draws from ``numpy.random.default_rng([seed, 2])``):

* The shared 5,000 users (home country among 8). Per user: usual log amount
  in USD ``mu_u ~ N(3.4, 0.7^2)``, spread ``sigma_u ~ U(0.4, 0.9)``, latent
  risk ``r_u ~ N(0, 1)``, history length ``n_u = 1 + floor(exp(N(3.2, 1)))``,
  chargebacks ``~ Binomial(n_u, sigmoid(r_u - 4.5))``, account age
  ``~ U(30, 2500)`` days. The ``user_txn_history`` fact holds noisy
  estimates of these (mean amount, std of log amount, count, chargeback
  rate, age).
* 80,000 payments: 6% by brand-new users absent from the facts (riskier:
  ``r ~ N(0.5, 1)``); 8% abroad (payment country != home); merchant category
  from 8 with fixed shares; card present with a per-category probability;
  log amount ``mu_u + sigma_u eps + category shift``; paid in the payment
  country's currency (10% in USD).
* Fraud ~ Bernoulli(sigmoid(-5.6 + 0.9 r_u + 1.6 abroad + 1.0 cnp +
  category risk + 0.9 relu(dev) + 0.8 dev cnp + 0.6 abroad cnp + 1.0 new)),
  with ``dev = (log amount - mu_u) / sigma_u`` and ``cnp`` = card not present.
* The first 60,000 payments train, the last 20,000 are held out.

Metrics, on the held-out payments through the shipped workflow: ROC AUC and
average precision. Baseline: the amount alone (in USD) as the score.

v1: logistic regression on the 16 base features, 300 full-batch Adam steps.
v2: one tanh hidden layer (16 units) on the base features plus 3 engineered
interactions, 30 epochs of minibatch Adam.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from workflows.base import Item
from workflows.facts import FactSpec, InMemoryFactStore, write_fact_npz
from workflows.fraud_score import BASE_FEATURES, ENGINEERED, fraud_features
from workflows.loading import build_model
from workflows.packaging import Manifest, weight_specs, write_package
from workflows.training.common import (
    COUNTRIES,
    COUNTRY_SHARE,
    CURRENCY,
    DEVICES,
    FX_TO_USD,
    Adam,
    Population,
    auc,
    average_precision,
    cli,
    population,
    probability_metrics,
    sigmoid,
    write_user_profile,
)

CATEGORIES = ("grocery", "restaurants", "fuel", "fashion", "travel", "electronics", "digital_goods", "gift_cards")
CATEGORY_SHARE = (0.25, 0.20, 0.10, 0.12, 0.08, 0.10, 0.10, 0.05)
CATEGORY_RISK = np.array([-1.0, -0.6, -0.4, 0.0, 0.4, 0.8, 0.6, 1.5])
CATEGORY_SHIFT = np.array([-0.2, -0.3, 0.0, 0.3, 1.2, 1.0, -0.5, 0.5])
CARD_PRESENT = np.array([0.9, 0.85, 0.95, 0.6, 0.3, 0.5, 0.05, 0.15])
N_PAYMENTS = 80_000
N_TRAIN = 60_000
BANDS = {"review": 0.1, "block": 0.5}

USER_TXN_HISTORY = FactSpec(
    name="user_txn_history",
    columns=("mean_amount_usd", "std_log_amount", "txn_count", "chargeback_rate", "account_age_days"),
    default=np.array([float(np.exp(3.4)), 0.65, 0.0, 0.012, 0.0]),
    key="user_id",
    description="Payment history per user; an unknown user gets a brand-new account: the population's "
    "typical amount and spread, no payments, the population chargeback rate, age 0.",
)


@dataclass(frozen=True)
class Data:
    """One draw of the generative process: facts and payments as serving requests."""

    pop: Population
    history: np.ndarray  # (users, 5) the fact
    items: list[Item]
    label: np.ndarray


def generate(seed: int, n_users: int = 5000) -> Data:
    """Draw user histories and payments with their fraud labels."""
    pop = population(seed, n_users)
    rng = np.random.default_rng([seed, 2])
    mu = rng.normal(3.4, 0.7, n_users)
    sigma = rng.uniform(0.4, 0.9, n_users)
    risk = rng.normal(0.0, 1.0, n_users)
    count = 1 + np.floor(np.exp(rng.normal(3.2, 1.0, n_users)))
    chargebacks = rng.binomial(count.astype(np.int64), sigmoid(risk - 4.5))
    age = rng.uniform(30, 2500, n_users)
    history = np.column_stack([
        np.exp(mu + rng.normal(0, 0.1, n_users)),
        sigma * rng.uniform(0.9, 1.1, n_users),
        count,
        chargebacks / count,
        np.floor(age),
    ])

    n = N_PAYMENTS
    new = rng.random(n) < 0.06
    user = rng.integers(n_users, size=n)
    u_mu = np.where(new, rng.normal(3.4, 0.7, n), mu[user])
    u_sigma = np.where(new, 0.65, sigma[user])
    u_risk = np.where(new, rng.normal(0.5, 1.0, n), risk[user])
    home = np.where(new, rng.choice(len(COUNTRIES), size=n, p=COUNTRY_SHARE), pop.country[user])
    abroad = rng.random(n) < 0.08
    where = np.where(abroad, (home + rng.integers(1, len(COUNTRIES), size=n)) % len(COUNTRIES), home)
    category = rng.choice(len(CATEGORIES), size=n, p=CATEGORY_SHARE)
    cnp = (rng.random(n) >= CARD_PRESENT[category]).astype(np.float64)
    dev = rng.normal(size=n)
    log_amount = u_mu + u_sigma * dev + CATEGORY_SHIFT[category]
    logit = (
        -5.6 + 0.9 * u_risk + 1.6 * abroad + 1.0 * cnp + CATEGORY_RISK[category]
        + 0.9 * np.maximum(dev, 0) + 0.8 * dev * cnp + 0.6 * abroad * cnp + 1.0 * new
    )
    label = (rng.random(n) < sigmoid(logit)).astype(np.float64)
    in_usd = rng.random(n) < 0.10

    items = []
    for i in range(n):
        currency = "USD" if in_usd[i] else CURRENCY[COUNTRIES[where[i]]]
        local = float(np.exp(log_amount[i])) / FX_TO_USD[currency]
        user_id = f"u-new-{i}" if new[i] else pop.user_ids[user[i]]
        items.append(Item(
            {"user_id": user_id, "country": COUNTRIES[where[i]],
             "device": DEVICES[pop.device[user[i]]], "surface": "checkout"},
            {"amount": round(local, 0 if currency == "JPY" else 2) or 1.0, "currency": currency,
             "merchant_category": CATEGORIES[category[i]], "card_present": not cnp[i]},
        ))
    return Data(pop, history, items, label)


def raw_features(workflow: Any, items: list[Item], facts: InMemoryFactStore) -> np.ndarray:
    """Unstandardised features through the serving workflow's own stages."""
    pre = workflow.preprocess(items)
    keys = workflow.fact_keys(pre)
    looked_up = {f: facts.lookup(f, keys[f]) for f in workflow.facts}
    return fraud_features(
        pre.amount_usd, pre.card_present, pre.country, pre.category,
        looked_up["user_txn_history"], looked_up["user_profile"],
        n_countries=len(COUNTRIES), n_categories=len(CATEGORIES), engineered=workflow.engineered,
    )


def train(x: np.ndarray, y: np.ndarray, *, hidden: int | None, seed: int) -> dict[str, np.ndarray]:
    """Fit logistic regression (``hidden=None``) or a one-hidden-layer tanh MLP."""
    rng = np.random.default_rng([seed, 20, hidden or 0])
    mean = x.mean(0)
    std = x.std(0)
    std[std < 1e-9] = 1.0
    z = (x - mean) / std
    width = z.shape[1]
    if hidden is None:
        p = {"coef": np.zeros(width), "intercept": np.array([-3.0])}
        opt = Adam(p, lr=0.05, l2=1e-4)
        for _ in range(300):
            d = (sigmoid(z @ p["coef"] + p["intercept"][0]) - y) / len(y)
            opt.step({"coef": z.T @ d, "intercept": np.array([d.sum()])})
    else:
        p = {
            "hidden": rng.normal(scale=1 / np.sqrt(width), size=(width, hidden)),
            "hidden_bias": np.zeros(hidden),
            "out": rng.normal(scale=1 / np.sqrt(hidden), size=hidden),
            "out_bias": np.array([-3.0]),
        }
        opt = Adam(p, lr=0.005, l2=1e-4)
        for _ in range(30):
            for batch in np.array_split(rng.permutation(len(y)), len(y) // 1024):
                zb, yb = z[batch], y[batch]
                h = np.tanh(zb @ p["hidden"] + p["hidden_bias"])
                d = (sigmoid(h @ p["out"] + p["out_bias"][0]) - yb) / len(batch)
                dh = np.outer(d, p["out"]) * (1 - h * h)
                opt.step({"hidden": zb.T @ dh, "hidden_bias": dh.sum(0), "out": h.T @ d,
                          "out_bias": np.array([d.sum()])})
    return {"feature_mean": mean, "feature_std": std, **p}


VERSIONS: dict[str, dict[str, Any]] = {"v1": {"hidden": None, "engineered": False},
                                       "v2": {"hidden": 16, "engineered": True}}

INPUT_SCHEMA = {
    "type": "object",
    "description": "payload; context needs user_id (string), reads country (where the payment happens)",
    "required": ["amount", "currency", "merchant_category", "card_present"],
    "properties": {
        "amount": {"type": "number", "exclusiveMinimum": 0},
        "currency": {"type": "string", "enum": sorted(FX_TO_USD)},
        "merchant_category": {"type": "string", "examples": list(CATEGORIES)},
        "card_present": {"type": "boolean"},
    },
}
OUTPUT_SCHEMA = {
    "type": "object",
    "required": ["probability", "band"],
    "properties": {
        "probability": {"type": "number", "minimum": 0, "maximum": 1},
        "band": {"type": "string", "enum": ["low", "review", "block"]},
    },
}


def params_for(cfg: dict[str, Any]) -> dict[str, Any]:
    """The manifest ``params`` of one version."""
    return {
        "model": "mlp" if cfg["hidden"] else "logistic",
        "engineered": cfg["engineered"],
        "fx_to_usd": FX_TO_USD,
        "countries": list(COUNTRIES),
        "categories": list(CATEGORIES),
        "bands": BANDS,
    }


def main() -> None:
    """Generate, train v1 and v2, evaluate, write packages and facts."""
    from workflows.fraud_score import FraudScore

    args = cli(__doc__.splitlines()[0])
    started = time.perf_counter()
    data = generate(args.seed)
    facts_dir, models_dir = args.out / "facts", args.out / "models"
    facts_dir.mkdir(parents=True, exist_ok=True)
    write_fact_npz(facts_dir, USER_TXN_HISTORY, data.pop.user_ids, data.history, dtype=np.float32)
    write_user_profile(facts_dir, data.pop)
    facts = InMemoryFactStore.from_dir(facts_dir)
    train_items, test_items = data.items[:N_TRAIN], data.items[N_TRAIN:]
    y_train, y_test = data.label[:N_TRAIN], data.label[N_TRAIN:]
    amount = np.array([it.payload["amount"] * FX_TO_USD[it.payload["currency"]] for it in test_items])
    baseline = {"auc": round(auc(y_test, amount), 6), "average_precision": round(average_precision(y_test, amount), 6)}
    process = __doc__.split("Generative process", 1)[1].split("Metrics,", 1)[0]
    for version, cfg in VERSIONS.items():
        width = len(BASE_FEATURES) + len(CATEGORIES) + (len(ENGINEERED) if cfg["engineered"] else 0)
        shell = FraudScore({"feature_mean": np.zeros(width), "feature_std": np.ones(width),
                            "coef": np.zeros(width), "intercept": np.zeros(1)},
                           {**params_for(cfg), "model": "logistic"})
        weights = train(raw_features(shell, train_items, facts), y_train, hidden=cfg["hidden"], seed=args.seed)
        manifest = Manifest(
            name="fraud-score",
            version=version,
            objective="fraud-score",
            workflow="fraud_score",
            description=(
                "Card-payment fraud probability from the payment and the user's history facts: "
                + ("logistic regression on 16 features." if cfg["hidden"] is None
                   else f"tanh MLP ({cfg['hidden']} hidden units) on 16 features plus 3 interactions.")
                + " Bands: review at p >= 0.1, block at p >= 0.5."
            ),
            facts=("user_txn_history", "user_profile"),
            input_schema=INPUT_SCHEMA,
            output_schema=OUTPUT_SCHEMA,
            params=params_for(cfg),
            weights=weight_specs(weights),
            training={
                "script": "workflows.training.fraud_score",
                "seed": args.seed,
                "date": args.date,
                "generative_process": " ".join(process.split()).lstrip(": "),
                "data_sizes": {
                    "users": len(data.pop.user_ids),
                    "payments": N_PAYMENTS,
                    "train_payments": N_TRAIN,
                    "heldout_payments": N_PAYMENTS - N_TRAIN,
                    "fraud_rate": round(float(data.label.mean()), 4),
                },
                "hyperparameters": {**cfg, "optimizer": "adam", "l2": 1e-4},
            },
            metrics={k: 0.0 for k in baseline},
            baseline="amount only: the payment amount in USD as the fraud score",
            baseline_metrics=baseline,
        )
        directory = models_dir / manifest.id
        write_package(directory, manifest, weights)
        metrics = probability_metrics(build_model(directory, facts), test_items, y_test)
        write_package(directory, replace(manifest, metrics=metrics), weights)
        print(json.dumps({"model": manifest.id, "metrics": metrics, "baseline_metrics": baseline}))
    print(json.dumps({"seconds": round(time.perf_counter() - started, 1), "fraud_rate": float(data.label.mean())}))


if __name__ == "__main__":
    main()
