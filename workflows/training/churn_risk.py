"""Train ``churn-risk@v1`` and ``@v2`` with scikit-learn on synthetic subscriptions; export them to ONNX.

Made the way a user would make a model of their own: scikit-learn on a generated data set,
exported with ``skl2onnx``, packaged with the package's own ``workflow.py``
(``workflows/training/churn_risk_workflow.py``). Needs the ``train`` extra
(``pip install 'scoreline[train]'``); serving the packages needs only onnxruntime.

Generative process (draws from ``numpy.random.default_rng([seed, 3])``):

* 40,000 subscriptions of the shared 5,000 users (drawn with replacement; their home
  country and device are the ``user_profile`` fact). Tenure in months
  ``floor(exp(N(2.3, 1.0)))`` capped at 120; plan basic / standard / premium with shares
  0.5 / 0.35 / 0.15 and list prices 9 / 15 / 22; monthly spend the list price times
  ``exp(N(0, 0.25))``; support tickets in the last 90 days ``~ Poisson(0.6 + 0.8 [tenure < 6])``;
  autopay ``~ Bernoulli(0.6)``.
* Churn within 30 days ~ Bernoulli(sigmoid(-1.3 + 1.4 [tenure < 3] - 0.35 log1p(tenure)
  + 0.45 tickets - 0.9 autopay + plan effect (0.45, 0, -0.4) + 0.5 tickets [basic]
  + 0.6 log(spend / list price) + country effect (BR, IN, MX +0.3) + 0.25 [mobile])).
* The first 30,000 subscriptions train, the last 10,000 are held out.

Metrics, on the held-out subscriptions through the shipped workflow (ONNX): ROC AUC and
average precision. Baseline: the support-ticket count alone as the score.

v1: ``StandardScaler`` + ``LogisticRegression`` (C=1). v2: ``GradientBoostingClassifier``
(150 trees of depth 3, learning rate 0.1), which can learn the step at three months and the
tickets-by-plan interaction that the linear model cannot.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from typing import Any

import numpy as np

from workflows.base import Item
from workflows.facts import InMemoryFactStore
from workflows.loading import build_model
from workflows.onnx import OnnxSpec, TensorSpec
from workflows.packaging import EXAMPLES_FILE, Manifest, write_package
from workflows.training import churn_risk_workflow
from workflows.training.churn_risk_workflow import FEATURES, PLANS
from workflows.training.common import (
    COUNTRIES,
    DEVICES,
    auc,
    average_precision,
    cli,
    population,
    probability_metrics,
    write_user_profile,
)

N_SUBSCRIPTIONS, N_TRAIN = 40_000, 30_000
PRICE = {"basic": 9.0, "standard": 15.0, "premium": 22.0}
PLAN_SHARE = (0.5, 0.35, 0.15)
PLAN_EFFECT = {"basic": 0.45, "standard": 0.0, "premium": -0.4}
COUNTRY_EFFECT = {"BR": 0.3, "IN": 0.3, "MX": 0.3}
WIDTH = len(FEATURES) + len(COUNTRIES) + len(DEVICES)

VERSIONS: dict[str, dict[str, Any]] = {
    "v1": {"model": "logistic_regression", "C": 1.0},
    "v2": {"model": "gradient_boosting", "n_estimators": 150, "max_depth": 3, "learning_rate": 0.1},
}

INPUT_SCHEMA = {
    "type": "object",
    "description": "payload; context needs user_id (string)",
    "required": ["tenure_months", "monthly_spend", "support_tickets_90d", "plan", "autopay"],
    "properties": {
        "tenure_months": {"type": "integer", "minimum": 0},
        "monthly_spend": {"type": "number", "exclusiveMinimum": 0},
        "support_tickets_90d": {"type": "integer", "minimum": 0},
        "plan": {"type": "string", "enum": list(PLANS)},
        "autopay": {"type": "boolean"},
    },
}
OUTPUT_SCHEMA = {
    "type": "object",
    "required": ["probability", "band"],
    "properties": {"probability": {"type": "number", "minimum": 0, "maximum": 1},
                   "band": {"type": "string", "enum": ["low", "watch", "act"]}},
}


def generate(seed: int) -> tuple[list[Item], np.ndarray]:
    """The subscriptions (as requests) and whether each churned."""
    pop = population(seed)
    rng = np.random.default_rng([seed, 3])
    users = rng.integers(0, len(pop.user_ids), N_SUBSCRIPTIONS)
    tenure = np.minimum(np.floor(np.exp(rng.normal(2.3, 1.0, N_SUBSCRIPTIONS))), 120).astype(np.int64)
    plan = rng.choice(len(PLANS), N_SUBSCRIPTIONS, p=PLAN_SHARE)
    price = np.array([PRICE[p] for p in PLANS])[plan]
    spend = np.round(price * np.exp(rng.normal(0.0, 0.25, N_SUBSCRIPTIONS)), 2)
    tickets = rng.poisson(0.6 + 0.8 * (tenure < 6))
    autopay = rng.random(N_SUBSCRIPTIONS) < 0.6
    country = np.array([COUNTRY_EFFECT.get(COUNTRIES[c], 0.0) for c in pop.country])[users]
    mobile = (np.asarray(pop.device)[users] == DEVICES.index("mobile")).astype(np.float64)
    basic = plan == PLANS.index("basic")
    logit = (-1.3 + 1.4 * (tenure < 3) - 0.35 * np.log1p(tenure) + 0.45 * tickets - 0.9 * autopay
             + np.array([PLAN_EFFECT[p] for p in PLANS])[plan] + 0.5 * tickets * basic
             + 0.6 * np.log(spend / price) + country + 0.25 * mobile)
    churned = (rng.random(N_SUBSCRIPTIONS) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    items = [Item({"user_id": pop.user_ids[u]},
                  {"tenure_months": int(t), "monthly_spend": float(s), "support_tickets_90d": int(k),
                   "plan": PLANS[p], "autopay": bool(a)})
             for u, t, s, k, p, a in zip(users, tenure, spend, tickets, plan, autopay)]
    return items, churned


def features_of(items: list[Item], facts: InMemoryFactStore) -> np.ndarray:
    """The feature matrix the shipped workflow builds: the same code, so training and serving agree."""
    workflow = churn_risk_workflow.ChurnRisk({}, {"watch": 0.2, "act": 0.5})
    pre = workflow.preprocess(items)
    assert not any(pre[0]), "generated subscriptions are all valid"
    lookups = {fact: facts.lookup(fact, keys) for fact, keys in workflow.fact_keys(pre).items()}
    matrix: np.ndarray = workflow.features(pre, lookups)
    return matrix


def train(x: np.ndarray, y: np.ndarray, *, seed: int, model: str, **params: Any) -> Any:
    """A fitted scikit-learn classifier."""
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if model == "logistic_regression":
        classifier: Any = make_pipeline(StandardScaler(), LogisticRegression(C=params["C"], max_iter=2000))
    else:
        classifier = GradientBoostingClassifier(random_state=seed, **params)
    return classifier.fit(x, y)


def to_onnx(classifier: Any) -> bytes:
    """The classifier as ONNX: input ``features`` [N, 18] float32, output ``probabilities`` [N, 2]."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    final = classifier.steps[-1][1] if hasattr(classifier, "steps") else classifier
    onnx_model = convert_sklearn(classifier, initial_types=[("features", FloatTensorType([None, WIDTH]))],
                                 options={id(final): {"zipmap": False}}, target_opset=17)
    serialized: bytes = onnx_model.SerializeToString()
    return serialized


ONNX = OnnxSpec("model.onnx", {"features": TensorSpec((None, WIDTH), "float32")},
                {"probabilities": TensorSpec((None, 2), "float32")})


def main() -> None:
    """Generate, train v1 and v2, export to ONNX, evaluate through the workflow, write the packages."""
    args = cli(__doc__.splitlines()[0])
    started = time.perf_counter()
    facts_dir, models_dir = args.out / "facts", args.out / "models"
    facts_dir.mkdir(parents=True, exist_ok=True)
    write_user_profile(facts_dir, population(args.seed))
    facts = InMemoryFactStore.from_dir(facts_dir)
    items, churned = generate(args.seed)
    x = features_of(items, facts)
    x_train, y_train, test_items, y_test = x[:N_TRAIN], churned[:N_TRAIN], items[N_TRAIN:], churned[N_TRAIN:]
    tickets = np.array([i.payload["support_tickets_90d"] for i in test_items], dtype=np.float64)
    baseline = {"auc": round(auc(y_test, tickets), 6),
                "average_precision": round(average_precision(y_test, tickets), 6)}
    process = __doc__.split("Generative process", 1)[1].split("Metrics,", 1)[0]
    for version, cfg in VERSIONS.items():
        classifier = train(x_train, y_train, seed=args.seed, **cfg)
        kind = "logistic regression" if cfg["model"] == "logistic_regression" else "gradient-boosted trees"
        manifest = Manifest(
            name="churn-risk", version=version, objective="churn-risk", workflow="workflow:ChurnRisk",
            description=(f"30-day churn probability of a subscriber: scikit-learn {kind} on the subscription "
                         f"and the user_profile fact, exported to ONNX. Bands: watch at p >= 0.2, act at p >= 0.5."),
            facts=("user_profile",), input_schema=INPUT_SCHEMA, output_schema=OUTPUT_SCHEMA,
            params={"watch": 0.2, "act": 0.5, "features": [*FEATURES, *(f"profile:{c}" for c in range(
                len(COUNTRIES) + len(DEVICES)))]},
            weights={},
            training={"script": "workflows.training.churn_risk", "seed": args.seed, "date": args.date,
                      "generative_process": " ".join(process.split()).lstrip(": "),
                      "data_sizes": {"subscriptions": N_SUBSCRIPTIONS, "train": N_TRAIN,
                                     "heldout": N_SUBSCRIPTIONS - N_TRAIN,
                                     "churn_rate": round(float(churned.mean()), 4)},
                      "hyperparameters": cfg, "exported_with": "skl2onnx, target opset 17"},
            metrics={}, baseline="the support-ticket count alone as the score", baseline_metrics={},
            onnx=ONNX,
        )
        directory = models_dir / manifest.id
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        (directory / "model.onnx").write_bytes(to_onnx(classifier))
        shutil.copyfile(churn_risk_workflow.__file__, directory / "workflow.py")
        examples = [{"context": dict(i.context), "payload": dict(i.payload)} for i in test_items[:5]]
        (directory / EXAMPLES_FILE).write_text(json.dumps(examples, indent=2) + "\n", encoding="utf-8")
        write_package(directory, manifest, {})
        metrics = probability_metrics(build_model(directory, facts), test_items, y_test)
        write_package(directory, replace(manifest, metrics=metrics, baseline_metrics=baseline), {})
        print(f"{manifest.id}: {metrics} (baseline {baseline})")
    print(f"trained in {time.perf_counter() - started:.1f} s; packages in {models_dir}")


if __name__ == "__main__":
    main()
