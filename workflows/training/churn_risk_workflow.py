"""The workflow of the ``churn-risk`` packages: a subscriber's 30-day churn probability, scored by ONNX.

This file is the ``workflow.py`` that ``workflows.training.churn_risk`` copies into each
package it writes (``churn-risk@v1``: a scikit-learn logistic regression; ``@v2``: gradient
boosted trees; both exported with skl2onnx): a workflow of its own, as a researcher ships
one, that scoreline loads from the package (``"workflow": "workflow:ChurnRisk"``).

Per batch: check each payload, look the users' profiles up once, build one float32 feature
matrix, run the ONNX model once, and band the probabilities.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from workflows import FactBatch, Item, Outcome, Workflow
from workflows.base import check_user_request, invalid

PLANS = ("basic", "standard", "premium")
FEATURES = ("tenure", "log_spend", "tickets", "autopay", "plan=basic", "plan=standard", "plan=premium")
"""The payload's features, in column order; the user_profile fact's columns follow them."""


class ChurnRisk(Workflow):
    """Churn probability from the subscription (payload) and the user's profile (fact), by an ONNX classifier."""

    facts = ("user_profile",)

    def preprocess(self, items: Sequence[Item]) -> Any:
        """Check each payload; keep the valid rows' numbers and users."""
        outcomes: list[Outcome | None] = [None] * len(items)
        rows: list[int] = []
        users: list[str] = []
        numbers: list[tuple[float, float, float, float, int]] = []
        for i, item in enumerate(items):
            problem = check_user_request(item) or _check_payload(item.payload)
            if problem is not None:
                outcomes[i] = problem
                continue
            p = item.payload
            rows.append(i)
            users.append(item.context["user_id"])
            numbers.append((p["tenure_months"] / 24.0, float(np.log1p(p["monthly_spend"])),
                            float(p["support_tickets_90d"]), float(p["autopay"]), PLANS.index(p["plan"])))
        return outcomes, rows, users, numbers

    def fact_keys(self, pre: Any) -> Mapping[str, Sequence[str]]:
        """The users whose profile the batch needs, once each lookup."""
        return {"user_profile": pre[2]}

    def features(self, pre: Any, facts: Mapping[str, FactBatch]) -> np.ndarray:
        """One float32 row per valid item: the payload's features, then the profile's one-hot columns."""
        numbers = pre[3]
        payload = np.zeros((len(numbers), len(FEATURES)), dtype=np.float32)
        if numbers:
            values = np.array(numbers, dtype=np.float64)
            payload[:, :4] = values[:, :4]
            payload[np.arange(len(numbers)), 4 + values[:, 4].astype(np.int64)] = 1.0
        profile = facts["user_profile"].values.astype(np.float32)
        return np.hstack([payload, profile])

    def predict(self, features: np.ndarray) -> np.ndarray:
        """One ONNX run for the batch: the probability of the churn class."""
        if not len(features):
            return np.zeros(0)
        probabilities: np.ndarray = self.onnx.run(features)["probabilities"][:, 1].astype(np.float64)
        return probabilities

    def postprocess(self, pre: Any, scores: np.ndarray) -> list[Outcome]:
        """``{"probability", "band"}``: ``act`` at or above ``params.act``, ``watch`` at or above ``params.watch``."""
        outcomes: list[Outcome] = pre[0]
        rows: list[int] = pre[1]
        watch, act = float(self.params["watch"]), float(self.params["act"])
        for i, p in zip(rows, scores.tolist()):
            band = "act" if p >= act else "watch" if p >= watch else "low"
            outcomes[i] = Outcome({"probability": round(p, 6), "band": band}, None)
        return outcomes


def _check_payload(payload: Mapping[str, Any]) -> Outcome | None:
    tenure = payload.get("tenure_months")
    if isinstance(tenure, bool) or not isinstance(tenure, int) or tenure < 0:
        return invalid("payload.tenure_months", "payload.tenure_months must be a whole number of months, 0 or more")
    spend = payload.get("monthly_spend")
    if isinstance(spend, bool) or not isinstance(spend, (int, float)) or not 0 < spend < 1e6:
        return invalid("payload.monthly_spend", "payload.monthly_spend must be a positive amount")
    tickets = payload.get("support_tickets_90d")
    if isinstance(tickets, bool) or not isinstance(tickets, int) or tickets < 0:
        return invalid("payload.support_tickets_90d", "payload.support_tickets_90d must be a count, 0 or more")
    if payload.get("plan") not in PLANS:
        return invalid("payload.plan", f"payload.plan must be one of {', '.join(PLANS)}")
    if not isinstance(payload.get("autopay"), bool):
        return invalid("payload.autopay", "payload.autopay must be true or false")
    return None
