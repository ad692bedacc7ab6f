"""The workflow of the ``retrieval-embedding`` reference package: nearest items over a 100k x 64 table.

This file is the ``workflow.py`` that ``workflows.training.reference`` copies into the package
(``"workflow": "workflow:EmbeddingRetrieval"``). A request names up to 100 items the user
engaged with; their mean embedding is the query, and the answer is the ``top_k`` items of the
whole table by dot product (numpy: one matrix product for the batch, then a partial sort).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from workflows import FactBatch, Item, Outcome, Workflow
from workflows.base import check_user_request, invalid


class EmbeddingRetrieval(Workflow):
    """The items closest to a user's history, by the dot product of unit embeddings."""

    def load(self, package: Any) -> None:
        super().load(package)
        (self.table,) = self.require("item_vectors")
        self.prefix = str(self.params["id_prefix"])
        self.max_history = int(self.params["max_history"])

    def preprocess(self, items: Sequence[Item]) -> Any:
        """Check each payload's ``history``; map it to table rows (unknown ids are dropped)."""
        outcomes: list[Outcome | None] = [None] * len(items)
        rows: list[int] = []
        histories: list[list[int]] = []
        for i, item in enumerate(items):
            history = item.payload.get("history")
            problem = check_user_request(item)
            if problem is None and (not isinstance(history, list) or not 1 <= len(history) <= self.max_history
                                    or not all(isinstance(h, str) for h in history)):
                problem = invalid("payload.history",
                                  f"payload.history must be a list of 1 to {self.max_history} item ids (strings)")
            known = [r for r in (self._row(h) for h in history or ()) if r >= 0] if problem is None else []
            if problem is None and not known:
                problem = invalid("payload.history", "payload.history names no known item")
            if problem is not None:
                outcomes[i] = problem
                continue
            rows.append(i)
            histories.append(known)
        return outcomes, rows, histories

    def fact_keys(self, pre: Any) -> Mapping[str, Sequence[str]]:
        """No facts: the table is the package's own."""
        return {}

    def features(self, pre: Any, facts: Mapping[str, FactBatch]) -> np.ndarray:
        """One unit query vector per valid request: the mean of its history's embeddings."""
        queries = np.stack([self.table[h].mean(axis=0) for h in pre[2]]) if pre[2] else \
            np.zeros((0, self.table.shape[1]), dtype=np.float32)
        norms = np.linalg.norm(queries, axis=1, keepdims=True)
        unit: np.ndarray = (queries / np.maximum(norms, 1e-9)).astype(np.float32)
        return unit

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Dot products of every query with every item: one ``(batch, 100k)`` matrix product."""
        scores: np.ndarray = features @ self.table.T
        return scores

    def postprocess(self, pre: Any, scores: np.ndarray) -> list[Outcome]:
        """``{"items": [{"item", "score"}, ...]}``: the ``params.top_k`` best items not in the history."""
        outcomes: list[Outcome | None] = pre[0]
        top_k = int(self.params["top_k"])
        for i, history, row in zip(pre[1], pre[2], scores):
            row[history] = -np.inf
            best = np.argpartition(-row, top_k)[:top_k]
            best = best[np.argsort(-row[best], kind="stable")]
            outcomes[i] = Outcome({"items": [{"item": f"{self.prefix}{j}", "score": round(float(row[j]), 6)}
                                             for j in best.tolist()]}, None)
        return outcomes  # type: ignore[return-value]  # every slot is filled: invalid ones in preprocess

    def _row(self, item_id: str) -> int:
        if item_id.startswith(self.prefix):
            digits = item_id[len(self.prefix):]
            if digits.isdigit() and int(digits) < len(self.table):
                return int(digits)
        return -1
