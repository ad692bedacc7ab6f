"""The ``fraud_score`` workflow: the probability that a card payment is fraud.

Payload: ``amount`` (number > 0, in ``currency``), ``currency`` (one of
``params.fx_to_usd``), ``merchant_category`` (string; an unknown category
counts as "other") and ``card_present`` (bool). Context: ``user_id`` and
``country`` (where the payment happens).

Facts, both keyed by user id:

``user_txn_history``
    ``mean_amount_usd``, ``std_log_amount``, ``txn_count``,
    ``chargeback_rate``, ``account_age_days``; an unknown user gets the
    row of a brand-new account (no history, population chargeback rate) and
    the ``new_user`` feature is set.
``user_profile``
    one-hot ``country=<C>`` and ``device=<D>`` columns; the home country
    gives the ``country_mismatch`` feature (0 for an unknown user).

Features (standardised with the package's ``feature_mean`` and
``feature_std``): log amount in USD, its deviation from the user's usual
amount, card not present, country mismatch, new user, log transaction count,
chargeback rate, log account age, merchant category one-hot; with
``params.engineered`` also ``relu(deviation)``, ``deviation x card not
present`` and ``mismatch x card not present``.

Model: ``params.model == "logistic"`` (weights ``coef``, ``intercept``) or
``"mlp"`` (one tanh hidden layer: ``hidden``, ``hidden_bias``, ``out``,
``out_bias``). Result::

    {"probability": 0.031, "band": "low"}   # band: low | review | block (params.bands thresholds)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from workflows.base import Item, Outcome, Workflow, check_user_request, invalid
from workflows.errors import ModelPackageError
from workflows.facts import FactBatch

__all__ = ["BASE_FEATURES", "ENGINEERED", "FraudScore", "fraud_features"]

BASE_FEATURES = (
    "log_amount_usd",
    "amount_deviation",
    "card_not_present",
    "country_mismatch",
    "new_user",
    "log_txn_count",
    "chargeback_rate",
    "log_account_age",
)
ENGINEERED = ("relu_amount_deviation", "deviation_x_card_not_present", "mismatch_x_card_not_present")
"Feature columns: BASE_FEATURES, one per merchant category, then ENGINEERED when enabled."


@dataclass(frozen=True, slots=True)
class _Batch:
    size: int
    errors: dict[int, Outcome]
    rows: np.ndarray  # input position of each valid item
    user_ids: list[str]
    amount_usd: np.ndarray
    card_present: np.ndarray
    country: np.ndarray  # index into params.countries, -1 when unknown
    category: np.ndarray  # index into params.categories, -1 for "other"


def fraud_features(
    amount_usd: np.ndarray,
    card_present: np.ndarray,
    country: np.ndarray,
    category: np.ndarray,
    history: FactBatch,
    profile: FactBatch,
    *,
    n_countries: int,
    n_categories: int,
    engineered: bool,
) -> np.ndarray:
    """The raw (unstandardised) feature matrix; shared by serving and training."""
    mean_amount, std_log, txn_count, chargeback_rate, age = history.values.T
    log_amount = np.log(amount_usd)
    deviation = (log_amount - np.log(np.maximum(mean_amount, 0.01))) / np.maximum(std_log, 0.1)
    cnp = 1.0 - card_present
    home = profile.values[:, :n_countries]
    here = np.zeros((len(country), n_countries))
    known = country >= 0
    here[np.flatnonzero(known), country[known]] = 1.0
    # Mismatch only when both sides are known: a new user has no home country.
    mismatch = (home.sum(axis=1) > 0) & known & ((home * here).sum(axis=1) < 0.5)
    mismatch = mismatch.astype(np.float64)
    onehot = np.zeros((len(category), n_categories))
    named = category >= 0
    onehot[np.flatnonzero(named), category[named]] = 1.0
    columns = [
        log_amount,
        deviation,
        cnp,
        mismatch,
        (~history.found).astype(np.float64),
        np.log1p(np.maximum(txn_count, 0.0)),
        chargeback_rate,
        np.log1p(np.maximum(age, 0.0)),
    ]
    if engineered:
        extra = [np.maximum(deviation, 0.0), deviation * cnp, mismatch * cnp]
    else:
        extra = []
    return np.column_stack([*columns, onehot, *extra]) if len(amount_usd) else np.zeros(
        (0, len(columns) + n_categories + len(extra))
    )


class FraudScore(Workflow):
    """Score a card payment for fraud (objective ``fraud-score``)."""

    name: ClassVar[str] = "fraud_score"
    facts: ClassVar[tuple[str, ...]] = ("user_txn_history", "user_profile")

    def __init__(self, weights: Mapping[str, np.ndarray], params: Mapping[str, Any]) -> None:
        super().__init__(weights, params)
        self.fx = {str(c): float(r) for c, r in self.params["fx_to_usd"].items()}
        self.countries = {str(c): i for i, c in enumerate(self.params["countries"])}
        self.categories = {str(c): i for i, c in enumerate(self.params["categories"])}
        self.engineered = bool(self.params.get("engineered", False))
        self.review = float(self.params["bands"]["review"])
        self.block = float(self.params["bands"]["block"])
        self.mean, self.std = self.require("feature_mean", "feature_std")
        self.model = str(self.params.get("model", "logistic"))
        if self.model == "logistic":
            self.coef, self.intercept = self.require("coef", "intercept")
        elif self.model == "mlp":
            self.hidden, self.hidden_bias, self.out, self.out_bias = self.require(
                "hidden", "hidden_bias", "out", "out_bias"
            )
        else:
            raise ModelPackageError(f"fraud_score: params.model {self.model!r} is not 'logistic' or 'mlp'")
        width = len(BASE_FEATURES) + len(self.categories) + (len(ENGINEERED) if self.engineered else 0)
        if self.mean.shape != (width,):
            raise ModelPackageError(f"fraud_score: feature_mean has shape {self.mean.shape}, the features {width}")

    def preprocess(self, items: Sequence[Item]) -> _Batch:
        """Validate each payment and convert its amount to USD."""
        errors: dict[int, Outcome] = {}
        rows: list[int] = []
        users: list[str] = []
        amounts: list[float] = []
        present: list[float] = []
        country: list[int] = []
        category: list[int] = []
        for pos, item in enumerate(items):
            problem = self._check(item)
            if problem is not None:
                errors[pos] = problem
                continue
            context, payload = item.context, item.payload
            rows.append(pos)
            users.append(context["user_id"])
            amounts.append(float(payload["amount"]) * self.fx[payload["currency"]])
            present.append(1.0 if payload["card_present"] else 0.0)
            where = context.get("country")
            country.append(self.countries.get(where, -1) if isinstance(where, str) else -1)
            category.append(self.categories.get(payload["merchant_category"], -1))
        return _Batch(
            size=len(items),
            errors=errors,
            rows=np.asarray(rows, dtype=np.int64),
            user_ids=users,
            amount_usd=np.asarray(amounts, dtype=np.float64),
            card_present=np.asarray(present, dtype=np.float64),
            country=np.asarray(country, dtype=np.int64),
            category=np.asarray(category, dtype=np.int64),
        )

    def _check(self, item: Item) -> Outcome | None:
        if (problem := check_user_request(item)) is not None:
            return problem
        payload = item.payload
        amount = payload.get("amount")
        if isinstance(amount, bool) or not isinstance(amount, (int, float)):
            return invalid("payload.amount", "payload.amount must be a number")
        try:
            finite = math.isfinite(amount)
        except OverflowError:  # an int too large for a float
            finite = False
        if not finite or amount <= 0:
            return invalid("payload.amount", "payload.amount must be a finite number greater than 0")
        currency = payload.get("currency")
        if not isinstance(currency, str) or currency not in self.fx:
            return invalid("payload.currency", f"payload.currency must be one of {', '.join(sorted(self.fx))}")
        if not isinstance(payload.get("merchant_category"), str):
            return invalid("payload.merchant_category", "payload.merchant_category must be a string")
        if not isinstance(payload.get("card_present"), bool):
            return invalid("payload.card_present", "payload.card_present must be true or false")
        return None

    def fact_keys(self, pre: _Batch) -> Mapping[str, Sequence[str]]:
        """Both facts are keyed by the paying user."""
        return {"user_txn_history": pre.user_ids, "user_profile": pre.user_ids}

    def features(self, pre: _Batch, facts: Mapping[str, FactBatch]) -> np.ndarray:
        """The standardised feature matrix of the valid items."""
        raw = fraud_features(
            pre.amount_usd,
            pre.card_present,
            pre.country,
            pre.category,
            facts["user_txn_history"],
            facts["user_profile"],
            n_countries=len(self.countries),
            n_categories=len(self.categories),
            engineered=self.engineered,
        )
        scaled: np.ndarray = (raw - self.mean) / self.std
        return scaled

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Fraud probability per valid item."""
        if self.model == "logistic":
            logit = features @ self.coef + self.intercept[0]
        else:
            logit = np.tanh(features @ self.hidden + self.hidden_bias) @ self.out + self.out_bias[0]
        probability: np.ndarray = 1.0 / (1.0 + np.exp(-logit))
        return probability

    def postprocess(self, pre: _Batch, scores: np.ndarray) -> list[Outcome]:
        """Probability and band per item; invalid items keep their errors."""
        outcomes: list[Outcome | None] = [None] * pre.size
        for pos, outcome in pre.errors.items():
            outcomes[pos] = outcome
        bands = np.where(scores >= self.block, "block", np.where(scores >= self.review, "review", "low"))
        for pos, p, band in zip(pre.rows.tolist(), scores.tolist(), bands.tolist()):
            outcomes[pos] = Outcome({"probability": p, "band": band}, None)
        return outcomes  # type: ignore[return-value]
