"""Build the reference models: three packages of realistic size, made by code from synthetic data.

The example packages cost the model almost nothing; these cost what served models cost, so the
worker's scoring executor, its batcher and the bench are measured where the model's compute is
most of a request. Nothing is downloaded: every array comes from ``default_rng`` on a fixed seed,
so a build reproduces the same packages. Needs the ``train`` extra (scikit-learn, onnx);
serving them needs only onnxruntime and numpy.

* ``ranker-gbdt@v1``: scikit-learn ``HistGradientBoostingRegressor``, 400 trees of up to 31
  leaves over 50 features (40 of the candidate item, from a 20,000-item table in the package,
  and 10 of the user, from the request), trained on 40,000 (user, item) pairs whose relevance
  is a fixed nonlinear function of both plus noise, written to ONNX as one tree ensemble. Every candidate of
  a request (1 to 500) is scored; the answer is the top 20.
* ``scorer-mlp@v1``: an MLP of 64 -> 1024 -> 896 -> 1 (ReLU, then a sigmoid; 985,089 parameters)
  as an ONNX graph built with ``onnx.helper``. Its weights are drawn (He initialisation), not
  trained: it is a reference for cost, not for accuracy.
* ``retrieval-embedding@v1``: a table of 100,000 unit vectors of 64 floats (numpy); a request's
  history of items is averaged into a query and the top 10 of the whole table by dot product
  come back.

``scoreline models reference`` runs :func:`build` (CI does too, and the end-to-end test serves
what it writes); ``reference_items`` makes requests for them.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from workflows.base import Item
from workflows.onnx import OnnxSpec, TensorSpec
from workflows.packaging import EXAMPLES_FILE, Manifest, ServingSpec, weight_specs, write_package

__all__ = ["BUILD", "OBJECTIVES", "build", "reference_items", "reference_rules"]

SEED = 20261203
BUILD = 2
"Bumped whenever a package changes: the cache directory of a build is named by it."

OBJECTIVES = ("ranker-gbdt", "scorer-mlp", "retrieval-embedding")
"The reference objectives, each served by ``<objective>@v1``."

ITEM_PREFIX = "item-"
RANKER_ITEMS, ITEM_WIDTH, USER_WIDTH = 20_000, 40, 10
RANKER_TREES, RANKER_PAIRS = 400, 40_000
MLP_LAYERS = (64, 1024, 896, 1)
EMBEDDING_ITEMS, EMBEDDING_WIDTH = 100_000, 64
_HERE = Path(__file__).parent


def build(out: str | Path, *, seed: int = SEED, date: str | None = None,
          progress: Callable[[str], None] = lambda _: None) -> Path:
    """Write the three packages under ``<out>/models`` and their rules as ``<out>/rules.json``; return ``out``."""
    out = Path(out)
    models = out / "models"
    models.mkdir(parents=True, exist_ok=True)
    date = date or dt.date.today().isoformat()
    for make in (_ranker, _mlp, _embedding):
        began = time.perf_counter()
        directory = make(models, seed, date)
        size = sum(f.stat().st_size for f in directory.iterdir())
        progress(f"{directory.name}: {size / 2**20:.1f} MiB in {time.perf_counter() - began:.1f} s")
    (out / "rules.json").write_text(json.dumps(reference_rules(), indent=2) + "\n", encoding="utf-8")
    return out


def reference_rules(prefix: str = "scoreline.") -> dict[str, Any]:
    """Rules that route each reference objective to its package on one shard, for the ``demo`` client."""
    return {
        "version": 1,
        "shards": {"ref": {}},
        "models": {f"{o}@v1": {"shard": "ref"} for o in OBJECTIVES},
        "clients": {"demo": {"objectives": ["*"], "reply_topics": [f"{prefix}replies.demo"]}},
        "objectives": {o: {"shard_key": "context.user_id", "default": f"{o}@v1"} for o in OBJECTIVES},
    }


def reference_items(objective: str, n: int, seed: int = 0, *, candidates: tuple[int, int] = (50, 200)) -> list[Item]:
    """``n`` requests for a reference objective; a ranking request has ``candidates`` (low, high) items."""
    rng = np.random.default_rng([seed, 11, OBJECTIVES.index(objective)])
    items = []
    for i in range(n):
        context = {"user_id": f"u-{int(rng.integers(50_000))}"}
        if objective == "ranker-gbdt":
            count = int(rng.integers(candidates[0], candidates[1] + 1))
            chosen = rng.choice(RANKER_ITEMS, size=count, replace=False)
            payload: dict[str, Any] = {"candidates": [f"{ITEM_PREFIX}{j}" for j in chosen.tolist()],
                                       "user_features": [round(v, 4) for v in rng.normal(size=USER_WIDTH).tolist()]}
        elif objective == "scorer-mlp":
            payload = {"features": [round(v, 4) for v in rng.normal(size=MLP_LAYERS[0]).tolist()]}
        elif objective == "retrieval-embedding":
            history = rng.choice(EMBEDDING_ITEMS, size=int(rng.integers(1, 31)), replace=False)
            payload = {"history": [f"{ITEM_PREFIX}{j}" for j in history.tolist()]}
        else:
            raise ValueError(f"no reference objective {objective!r}; have {', '.join(OBJECTIVES)}")
        items.append(Item(context, payload))
        del i
    return items


def _package(models: Path, manifest: Manifest, workflow_file: str, weights: dict[str, np.ndarray],
             onnx_bytes: bytes | None = None) -> Path:
    directory = models / manifest.id
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    shutil.copyfile(_HERE / workflow_file, directory / "workflow.py")
    if onnx_bytes is not None:
        (directory / "model.onnx").write_bytes(onnx_bytes)
    examples = [{"context": dict(i.context), "payload": dict(i.payload)}
                for i in reference_items(manifest.objective, 3, seed=1, candidates=(5, 30))]
    (directory / EXAMPLES_FILE).write_text(json.dumps(examples, indent=2) + "\n", encoding="utf-8")
    return write_package(directory, manifest, weights)


def _manifest(objective: str, workflow: str, description: str, input_schema: dict[str, Any],
              output_schema: dict[str, Any], params: dict[str, Any], weights: dict[str, np.ndarray],
              training: dict[str, Any], metrics: dict[str, float], baseline: str,
              baseline_metrics: dict[str, float], onnx: OnnxSpec | None = None, *, serving: ServingSpec) -> Manifest:
    return Manifest(
        name=objective, version="v1", objective=objective, workflow=workflow, description=description, facts=(),
        input_schema=input_schema, output_schema=output_schema, params=params, weights=weight_specs(weights),
        training={"script": "workflows.training.reference", "build": BUILD, **training}, metrics=metrics,
        baseline=baseline, baseline_metrics=baseline_metrics, onnx=onnx, serving=serving,
    )


def _ranker(models: Path, seed: int, date: str) -> Path:
    from sklearn.ensemble import HistGradientBoostingRegressor

    rng = np.random.default_rng([seed, 1])
    items = rng.normal(size=(RANKER_ITEMS, ITEM_WIDTH)).astype(np.float32)
    mix = rng.normal(size=(ITEM_WIDTH, USER_WIDTH)) / np.sqrt(ITEM_WIDTH)
    popularity = rng.normal(size=ITEM_WIDTH) / np.sqrt(ITEM_WIDTH)

    def relevance(item_rows: np.ndarray, users: np.ndarray) -> np.ndarray:
        affinity = np.einsum("ij,jk,ik->i", item_rows, mix, users)
        value: np.ndarray = (np.tanh(affinity) + 0.5 * np.maximum(item_rows @ popularity, 0)
                             + 0.3 * np.sin(2 * item_rows[:, 0]) * users[:, 0])
        return value

    pick = rng.integers(RANKER_ITEMS, size=RANKER_PAIRS)
    users = rng.normal(size=(RANKER_PAIRS, USER_WIDTH)).astype(np.float32)
    x = np.hstack([items[pick], users]).astype(np.float32)
    y = relevance(items[pick].astype(np.float64), users.astype(np.float64)) + rng.normal(0, 0.3, RANKER_PAIRS)
    train, held = slice(0, 30_000), slice(30_000, None)
    model = HistGradientBoostingRegressor(max_iter=RANKER_TREES, max_leaf_nodes=31, learning_rate=0.05,
                                          early_stopping=False, random_state=seed).fit(x[train], y[train])
    onnx_bytes = _trees_to_onnx(model, ITEM_WIDTH + USER_WIDTH)
    _check_export(onnx_bytes, x[held], model.predict(x[held]))
    r2 = _r2(y[held], model.predict(x[held]))
    coef, *_ = np.linalg.lstsq(np.hstack([x[train], np.ones((30_000, 1))]), y[train], rcond=None)
    baseline_r2 = _r2(y[held], np.hstack([x[held], np.ones((len(y) - 30_000, 1))]) @ coef)
    weights = {"item_features": items}
    manifest = _manifest(
        "ranker-gbdt", "workflow:GbdtRanker",
        f"Reference ranker: scikit-learn gradient-boosted trees ({RANKER_TREES} trees, up to 31 leaves) over "
        f"{ITEM_WIDTH} item and {USER_WIDTH} user features, exported to ONNX; scores every candidate and returns "
        "the top 20. A cost reference on synthetic data.",
        {"type": "object", "description": "payload; context needs user_id (string)",
         "required": ["candidates", "user_features"],
         "properties": {"candidates": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 500},
                        "user_features": {"type": "array", "items": {"type": "number"},
                                          "minItems": USER_WIDTH, "maxItems": USER_WIDTH}}},
        {"type": "object", "required": ["ranking", "unknown_items"],
         "properties": {"ranking": {"type": "array", "items": {"type": "object", "required": ["item", "score"]}},
                        "unknown_items": {"type": "integer", "minimum": 0}}},
        {"id_prefix": ITEM_PREFIX, "user_features": USER_WIDTH, "max_candidates": 500, "top_k": 20},
        weights,
        {"seed": seed, "date": date, "trees": RANKER_TREES,
         "data_sizes": {"items": RANKER_ITEMS, "pairs": RANKER_PAIRS, "train": 30_000, "heldout": 10_000},
         "generative_process": "relevance = tanh(item' M user) + 0.5 relu(item . w) + 0.3 sin(2 item_0) user_0 "
                               "+ N(0, 0.3^2), item and user features N(0, 1)",
         "exported_with": "workflows.training.reference._trees_to_onnx (ai.onnx.ml TreeEnsembleRegressor)"},
        {"heldout_r2": r2}, "least-squares linear regression on the same 50 features", {"heldout_r2": baseline_r2},
        OnnxSpec("model.onnx", {"features": TensorSpec((None, ITEM_WIDTH + USER_WIDTH), "float32")},
                 {"scores": TensorSpec((None, 1), "float32")}),
        serving=ServingSpec(max_batch_cost=2048, batch_cost="payload.candidates"))
    return _package(models, manifest, "gbdt_ranker.py", weights, onnx_bytes)


def _trees_to_onnx(model: Any, width: int) -> bytes:
    """A fitted ``HistGradientBoostingRegressor`` as one ONNX ``TreeEnsembleRegressor`` (input ``features``).

    skl2onnx 1.20 cannot export this estimator with onnx 1.23 (it writes a boolean into an
    integer attribute), and the trees are plain enough to write directly: a node goes left when
    the feature is at most its threshold, or is missing and the node sends missing values left;
    the prediction is the baseline plus the leaves' values (the learning rate is in them).
    """
    from onnx import TensorProto, helper

    attrs: dict[str, list[Any]] = {k: [] for k in (
        "nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_values", "nodes_modes", "nodes_truenodeids",
        "nodes_falsenodeids", "nodes_missing_value_tracks_true", "target_treeids", "target_nodeids", "target_ids",
        "target_weights")}
    for tree, (predictor,) in enumerate(model._predictors):
        for node_id, node in enumerate(predictor.nodes):
            leaf = bool(node["is_leaf"])
            threshold = np.float32(node["num_threshold"])
            if not leaf and float(threshold) > float(node["num_threshold"]):  # float32 rounding must not move x left
                threshold = np.nextafter(threshold, np.float32(-np.inf))
            attrs["nodes_treeids"].append(tree)
            attrs["nodes_nodeids"].append(node_id)
            attrs["nodes_featureids"].append(0 if leaf else int(node["feature_idx"]))
            attrs["nodes_values"].append(0.0 if leaf else float(threshold))
            attrs["nodes_modes"].append("LEAF" if leaf else "BRANCH_LEQ")
            attrs["nodes_truenodeids"].append(0 if leaf else int(node["left"]))
            attrs["nodes_falsenodeids"].append(0 if leaf else int(node["right"]))
            attrs["nodes_missing_value_tracks_true"].append(0 if leaf else int(node["missing_go_to_left"]))
            if leaf:
                attrs["target_treeids"].append(tree)
                attrs["target_nodeids"].append(node_id)
                attrs["target_ids"].append(0)
                attrs["target_weights"].append(float(node["value"]))
    baseline = float(np.ravel(model._baseline_prediction)[0])
    settings: dict[str, Any] = {"n_targets": 1, "base_values": [baseline], "aggregate_function": "SUM",
                                "post_transform": "NONE", **attrs}
    node = helper.make_node("TreeEnsembleRegressor", ["features"], ["scores"], domain="ai.onnx.ml", **settings)
    graph = helper.make_graph([node], "ranker-gbdt",
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, width])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 1])])
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                         helper.make_opsetid("ai.onnx.ml", 3)])
    onnx_model.ir_version = 8
    serialized: bytes = onnx_model.SerializeToString()
    return serialized


def _mlp(models: Path, seed: int, date: str) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng([seed, 2])
    nodes, initializers, last = [], [], "features"
    for layer, (fan_in, fan_out) in enumerate(zip(MLP_LAYERS, MLP_LAYERS[1:])):
        w = (rng.normal(size=(fan_in, fan_out)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        b = np.zeros(fan_out, dtype=np.float32)
        initializers += [numpy_helper.from_array(w, f"w{layer}"), numpy_helper.from_array(b, f"b{layer}")]
        nodes.append(helper.make_node("Gemm", [last, f"w{layer}", f"b{layer}"], [f"z{layer}"]))
        final = layer == len(MLP_LAYERS) - 2
        last = "probability" if final else f"h{layer}"
        nodes.append(helper.make_node("Sigmoid" if final else "Relu", [f"z{layer}"], [last]))
    graph = helper.make_graph(nodes, "scorer-mlp",
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, MLP_LAYERS[0]])],
                              [helper.make_tensor_value_info("probability", TensorProto.FLOAT, [None, 1])],
                              initializers)
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx_model.ir_version = 8
    parameters = sum(a * b + b for a, b in zip(MLP_LAYERS, MLP_LAYERS[1:]))
    manifest = _manifest(
        "scorer-mlp", "workflow:MlpScorer",
        f"Reference MLP: {' -> '.join(map(str, MLP_LAYERS))} (ReLU, sigmoid out; {parameters:,} parameters) as "
        "ONNX, one probability per request. Its weights are drawn, not trained: a cost reference.",
        {"type": "object", "description": "payload; context needs user_id (string)", "required": ["features"],
         "properties": {"features": {"type": "array", "items": {"type": "number"},
                                     "minItems": MLP_LAYERS[0], "maxItems": MLP_LAYERS[0]}}},
        {"type": "object", "required": ["probability"],
         "properties": {"probability": {"type": "number", "minimum": 0, "maximum": 1}}},
        {"features": MLP_LAYERS[0]}, {},
        {"seed": seed, "date": date, "data_sizes": {"parameters": parameters}, "layers": list(MLP_LAYERS),
         "generative_process": "He-initialised weights from default_rng([seed, 2]); zero biases; not trained",
         "exported_with": "onnx.helper, opset 17"},
        {}, "none: untrained", {},
        OnnxSpec("model.onnx", {"features": TensorSpec((None, MLP_LAYERS[0]), "float32")},
                 {"probability": TensorSpec((None, 1), "float32")}),
        serving=ServingSpec(max_batch_cost=256))
    return _package(models, manifest, "mlp_scorer.py", {}, onnx_model.SerializeToString())


def _embedding(models: Path, seed: int, date: str) -> Path:
    rng = np.random.default_rng([seed, 3])
    table = rng.normal(size=(EMBEDDING_ITEMS, EMBEDDING_WIDTH)).astype(np.float32)
    table /= np.linalg.norm(table, axis=1, keepdims=True)
    weights = {"item_vectors": table}
    manifest = _manifest(
        "retrieval-embedding", "workflow:EmbeddingRetrieval",
        f"Reference embedding retrieval (numpy): {EMBEDDING_ITEMS:,} unit item vectors of {EMBEDDING_WIDTH}; the "
        "mean of a request's history is the query, the top 10 of the whole table by dot product the answer.",
        {"type": "object", "description": "payload; context needs user_id (string)", "required": ["history"],
         "properties": {"history": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 100}}},
        {"type": "object", "required": ["items"],
         "properties": {"items": {"type": "array", "items": {"type": "object", "required": ["item", "score"]}}}},
        {"id_prefix": ITEM_PREFIX, "max_history": 100, "top_k": 10}, weights,
        {"seed": seed, "date": date, "data_sizes": {"items": EMBEDDING_ITEMS, "width": EMBEDDING_WIDTH},
         "generative_process": "N(0, 1) vectors from default_rng([seed, 3]), normalised to unit length"},
        {}, "none: not trained", {}, serving=ServingSpec(max_batch_cost=64))
    return _package(models, manifest, "embedding_retrieval.py", weights)


def _check_export(onnx_bytes: bytes, x: np.ndarray, expected: np.ndarray) -> None:
    """Refuse an export whose scores differ from scikit-learn's beyond float32 rounding."""
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    got = session.run(None, {"features": x})[0][:, 0]
    worst = float(np.abs(got - expected).max())
    if worst > 1e-4:
        raise RuntimeError(f"the ONNX export of ranker-gbdt differs from scikit-learn by up to {worst:.2e}")


def _r2(y: np.ndarray, p: np.ndarray) -> float:
    return round(float(1 - ((y - p) ** 2).sum() / ((y - y.mean()) ** 2).sum()), 4)
