"""The workflow of the ``scorer-mlp`` reference package: one score per request from a 1M-parameter MLP.

This file is the ``workflow.py`` that ``workflows.training.reference`` copies into the package
(``"workflow": "workflow:MlpScorer"``). A request carries 64 numeric features; one ONNX run
(three dense layers, about 985,000 parameters) scores the whole batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from workflows import FactBatch, Item, Outcome, Workflow
from workflows.base import check_user_request, invalid


class MlpScorer(Workflow):
    """A probability per request from a multi-layer perceptron (ONNX)."""

    def preprocess(self, items: Sequence[Item]) -> Any:
        """Check each payload's ``features``; keep the valid rows."""
        width = int(self.params["features"])
        outcomes: list[Outcome | None] = [None] * len(items)
        rows: list[int] = []
        values: list[list[float]] = []
        for i, item in enumerate(items):
            features = item.payload.get("features")
            problem = check_user_request(item)
            if problem is None and (not isinstance(features, list) or len(features) != width or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in features)):
                problem = invalid("payload.features", f"payload.features must be a list of {width} numbers")
            if problem is not None:
                outcomes[i] = problem
                continue
            rows.append(i)
            values.append(features)  # type: ignore[arg-type]  # checked above
        return outcomes, rows, values

    def fact_keys(self, pre: Any) -> Mapping[str, Sequence[str]]:
        """No facts: the request carries its features."""
        return {}

    def features(self, pre: Any, facts: Mapping[str, FactBatch]) -> np.ndarray:
        """The valid rows as one float32 matrix."""
        return np.array(pre[2], dtype=np.float32).reshape(len(pre[2]), int(self.params["features"]))

    def predict(self, features: np.ndarray) -> np.ndarray:
        """One ONNX run for the batch."""
        if not len(features):
            return np.zeros(0)
        scores: np.ndarray = self.onnx.run(features)["probability"][:, 0].astype(np.float64)
        return scores

    def postprocess(self, pre: Any, scores: np.ndarray) -> list[Outcome]:
        """``{"probability": p}`` per valid request."""
        outcomes: list[Outcome | None] = pre[0]
        for i, p in zip(pre[1], scores.tolist()):
            outcomes[i] = Outcome({"probability": round(p, 6)}, None)
        return outcomes  # type: ignore[return-value]  # every slot is filled: invalid ones in preprocess
