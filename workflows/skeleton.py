"""A new model package, ready to edit: ``scoreline models new NAME@VERSION --objective O``.

The skeleton validates and serves as generated: its ``workflow.py`` scores a trivial example
(a logistic of ``payload.x``), its ``examples.json`` holds requests that exercise it, and
its manifest names the workflow as ``workflow:<Class>``. Rewrite ``workflow.py`` (and the
manifest's schemas, params, facts, training and metrics) to make it a model of your own.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

from workflows.packaging import EXAMPLES_FILE, FORMAT, MANIFEST_FILE

__all__ = ["WORKFLOW_FILE", "class_name_for", "new_package"]

WORKFLOW_FILE = "workflow.py"

_WORKFLOW = '''"""The workflow of {model_id}: what it computes, over a whole batch at a time.

scoreline calls the stages in order for every batch of requests (see docs/your-own-model.md):
preprocess -> fact_keys -> (facts looked up) -> features -> predict -> postprocess.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from workflows import FactBatch, Item, Outcome, Workflow
from workflows.base import invalid


class {class_name}(Workflow):
    """A logistic of ``payload.x`` (``params.scale`` sets its slope): replace it with your model."""

    facts = ()  # the facts this workflow looks up, e.g. ("user_profile",); the manifest lists the same

    def preprocess(self, items: Sequence[Item]) -> Any:
        """Check each item; the invalid ones get an ``invalid_payload`` outcome naming the field."""
        outcomes: list[Outcome | None] = [None] * len(items)
        valid: list[tuple[int, float]] = []
        for i, item in enumerate(items):
            x = item.payload.get("x") if isinstance(item.payload, Mapping) else None
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                outcomes[i] = invalid("payload.x", "payload.x must be a number")
            else:
                valid.append((i, float(x)))
        return outcomes, valid

    def fact_keys(self, pre: Any) -> Mapping[str, Sequence[str]]:
        """The keys to look up per fact (none here)."""
        return {{}}

    def features(self, pre: Any, facts: Mapping[str, FactBatch]) -> np.ndarray:
        """One row per valid item."""
        _, valid = pre
        return np.array([[x] for _, x in valid], dtype=np.float64).reshape(len(valid), 1)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """One numpy computation for the whole batch."""
        scale = float(self.params.get("scale", 1.0))
        scores: np.ndarray = 1.0 / (1.0 + np.exp(-scale * features[:, 0]))
        return scores

    def postprocess(self, pre: Any, scores: np.ndarray) -> list[Outcome]:
        """One outcome per input item, in input order."""
        outcomes, valid = pre
        for (i, _), score in zip(valid, scores.tolist()):
            outcomes[i] = Outcome({{"score": round(score, 6)}}, None)
        return outcomes
'''

_EXAMPLES = [
    {"context": {"user_id": "u-1", "country": "US"}, "payload": {"x": 0.5}},
    {"context": {"user_id": "u-2", "country": "DE"}, "payload": {"x": -2}},
    {"context": {"user_id": "u-3", "country": "US"}, "payload": {"x": 3.25}},
]


def class_name_for(name: str) -> str:
    """``churn-risk`` -> ``ChurnRisk``: the workflow class a skeleton defines."""
    words = [w for w in re.split(r"[^A-Za-z0-9]+", name) if w]
    candidate = "".join(w[:1].upper() + w[1:] for w in words) or "Model"
    return candidate if candidate[0].isalpha() else f"Model{candidate}"


def new_package(models_dir: str | Path, model_id: str, objective: str) -> Path:
    """Write the skeleton of ``<name>@<version>`` under ``models_dir``; return its directory.

    Raises:
        ValueError: ``model_id`` is not ``name@version``, or the directory exists already.
    """
    name, _, version = model_id.partition("@")
    if not name or not version or "@" in version or "/" in model_id:
        raise ValueError(f"model id must be NAME@VERSION, got {model_id!r}")
    directory = Path(models_dir) / model_id
    if directory.exists():
        raise ValueError(f"{directory} exists already; pick another version or remove it")
    class_name = class_name_for(name)
    manifest = {
        "format": FORMAT,
        "name": name,
        "version": version,
        "objective": objective,
        "workflow": f"workflow:{class_name}",
        "description": f"{model_id}: a skeleton from `scoreline models new`; describe your model here.",
        "facts": [],
        "input_schema": {"type": "object", "required": ["x"], "properties": {"x": {"type": "number"}}},
        "output_schema": {"type": "object", "required": ["score"],
                          "properties": {"score": {"type": "number", "minimum": 0, "maximum": 1}}},
        "params": {"scale": 1.0},
        "weights": {},
        "training": {"seed": 0, "generative_process": "none yet: a skeleton to replace", "data_sizes": {},
                     "date": dt.date.today().isoformat(), "script": "scoreline models new"},
        "metrics": {},
        "baseline": "none yet",
        "baseline_metrics": {},
    }
    directory.mkdir(parents=True)
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    (directory / WORKFLOW_FILE).write_text(_WORKFLOW.format(model_id=model_id, class_name=class_name),
                                           encoding="utf-8")
    (directory / EXAMPLES_FILE).write_text(json.dumps(_EXAMPLES, indent=2) + "\n", encoding="utf-8")
    return directory
