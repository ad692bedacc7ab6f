"""The workflow of the ``ranker-gbdt`` reference package: every candidate of a request scored by 400 trees.

This file is the ``workflow.py`` that ``workflows.training.reference`` copies into the package
(``"workflow": "workflow:GbdtRanker"``). A request names a user's features and 1 to 500
candidate items; each candidate's row is the item's 40 features (a table in the package, as a
candidate-feature cache would hold them) beside the user's 10, and one ONNX run scores every
candidate of the batch. The manifest counts a request's cost in candidates
(``serving.batch_cost``), so the worker's batcher bounds a call by candidates, not requests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from workflows import FactBatch, Item, Outcome, Workflow
from workflows.base import check_user_request, invalid


class GbdtRanker(Workflow):
    """Top items of each request's candidates by a gradient-boosted ranker (scikit-learn, exported to ONNX)."""

    def load(self, package: Any) -> None:
        super().load(package)
        (self.items,) = self.require("item_features")
        self.prefix = str(self.params["id_prefix"])
        self.user_width = int(self.params["user_features"])
        self.max_candidates = int(self.params["max_candidates"])
        self.default_row = self.items.mean(axis=0).astype(np.float32)

    def preprocess(self, items: Sequence[Item]) -> Any:
        """Check each payload; map every candidate to its row of the item table (-1: unknown), once."""
        outcomes: list[Outcome | None] = [None] * len(items)
        rows: list[int] = []
        candidates: list[list[str]] = []
        users: list[list[float]] = []
        indexes: list[np.ndarray] = []
        for i, item in enumerate(items):
            problem = check_user_request(item) or self._check(item.payload)
            if problem is not None:
                outcomes[i] = problem
                continue
            rows.append(i)
            ids = item.payload["candidates"]
            candidates.append(ids)
            users.append(item.payload["user_features"])
            indexes.append(np.fromiter((self._row(c) for c in ids), dtype=np.int64, count=len(ids)))
        return outcomes, rows, candidates, users, indexes

    def fact_keys(self, pre: Any) -> Mapping[str, Sequence[str]]:
        """No facts: the item features are the package's own table."""
        return {}

    def features(self, pre: Any, facts: Mapping[str, FactBatch]) -> np.ndarray:
        """One float32 row per candidate of every valid request: the item's features, then the user's."""
        candidates: list[list[str]] = pre[2]
        width = self.items.shape[1] + self.user_width
        total = sum(len(c) for c in candidates)
        matrix = np.empty((total, width), dtype=np.float32)
        at = 0
        for ids, user, index in zip(candidates, pre[3], pre[4]):
            block = matrix[at:at + len(ids)]
            block[:, :self.items.shape[1]] = self.items[np.maximum(index, 0)]
            block[index < 0, :self.items.shape[1]] = self.default_row
            block[:, self.items.shape[1]:] = np.asarray(user, dtype=np.float32)
            at += len(ids)
        return matrix

    def predict(self, features: np.ndarray) -> np.ndarray:
        """One ONNX run over every candidate of the batch."""
        if not len(features):
            return np.zeros(0)
        scores: np.ndarray = self.onnx.run(features)["scores"][:, 0].astype(np.float64)
        return scores

    def postprocess(self, pre: Any, scores: np.ndarray) -> list[Outcome]:
        """``{"ranking": [{"item", "score"}, ...], "unknown_items": n}``: the top ``params.top_k`` candidates."""
        outcomes: list[Outcome | None] = pre[0]
        top_k = int(self.params["top_k"])
        at = 0
        for i, ids, index in zip(pre[1], pre[2], pre[4]):
            mine = scores[at:at + len(ids)]
            at += len(ids)
            order = np.argsort(-mine, kind="stable")[:top_k]
            ranking = [{"item": ids[j], "score": round(float(mine[j]), 6)} for j in order.tolist()]
            outcomes[i] = Outcome({"ranking": ranking, "unknown_items": int((index < 0).sum())}, None)
        return outcomes  # type: ignore[return-value]  # every slot is filled: invalid ones in preprocess

    def _row(self, item_id: str) -> int:
        if item_id.startswith(self.prefix):
            digits = item_id[len(self.prefix):]
            if digits.isdigit() and int(digits) < len(self.items):
                return int(digits)
        return -1

    def _check(self, payload: Mapping[str, Any]) -> Outcome | None:
        candidates = payload.get("candidates")
        if not isinstance(candidates, list) or not 1 <= len(candidates) <= self.max_candidates \
                or not all(isinstance(c, str) for c in candidates):
            return invalid("payload.candidates",
                           f"payload.candidates must be a list of 1 to {self.max_candidates} item ids (strings)")
        user = payload.get("user_features")
        if not isinstance(user, list) or len(user) != self.user_width \
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in user):
            return invalid("payload.user_features",
                           f"payload.user_features must be a list of {self.user_width} numbers")
        return None
