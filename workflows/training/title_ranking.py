"""Train ``title-ranking@v1`` and ``@v2`` on synthetic viewing data.

Generative process (all draws from ``numpy.random.default_rng([seed, 1])``):

* 5,000 users (shared population: home country among 8, main device among 3)
  and 400 titles ``t-0`` ... ``t-399``.
* Latent tastes: user factors ``z_u ~ N(0, I_8)``, title factors
  ``v_t ~ N(0, 1.6^2/8 I_8)``.
* The ``user_embedding`` fact is what an upstream pipeline would publish: a
  noisy 16-dim linear mix of the tastes, ``e_u = z_u M + N(0, 0.35^2)``.
* Popularity: global ``g_t ~ N(0, 1)``, per-country deviation
  ``d_ct ~ N(0, 0.6^2)``, per-device affinity ``h_dt ~ N(0, 0.5^2)``.
* Availability: each title is unavailable in each country with probability
  0.15 (fact ``title_availability``).
* Utility ``s_ut = z_u . v_t + g_t + d_(c_u)t + h_(dev_u)t + Logistic(0, 1)``;
  the outcome is graded: 0 (skipped), 1 (played, ``s > 2``), 2 (finished,
  ``s > 3.5``).
* 80% of users are for training: 30 impressions each, drawn uniformly from
  the titles available in their country, label "played". The other 20% are
  held out: 20 candidates each (like a serving request), graded outcomes.

Metrics, on held-out users, computed through the shipped workflow:
NDCG@10 (gain ``2^rel - 1``) and MRR of the first played title. Baseline:
popularity only, each title's smoothed play rate in the user's country in
the training data.

v1: linear user tower (16 -> 16), 16-dim title embeddings, country bias;
6 epochs. v2: ReLU user tower (16 -> 32 -> 16), 16-dim title embeddings,
country and device bias; 8 epochs.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workflows.base import Item
from workflows.facts import FactSpec, InMemoryFactStore, write_fact_json, write_fact_npz
from workflows.loading import build_model
from workflows.packaging import Manifest, weight_specs, write_package
from workflows.training.common import (
    COUNTRIES,
    DEVICES,
    Adam,
    Population,
    cli,
    ndcg_at_k,
    population,
    sigmoid,
    write_user_profile,
)

N_TITLES = 400
LATENT = 8
EMBEDDING = 16
IMPRESSIONS = 30
CANDIDATES = 20
HOLDOUT = 0.2

USER_EMBEDDING = FactSpec(
    name="user_embedding",
    columns=tuple(f"e{i}" for i in range(EMBEDDING)),
    default=np.zeros(EMBEDDING),
    key="user_id",
    description="16-dim taste embedding per user from the upstream viewing pipeline; "
    "an unknown user gets the zero vector, the population mean.",
)
TITLE_AVAILABILITY = FactSpec(
    name="title_availability",
    columns=COUNTRIES,
    default=np.zeros(len(COUNTRIES)),
    key="title_id",
    description="1 where the title is licensed in the country, 0 where not; "
    "a title missing from the fact is treated as unavailable everywhere.",
)


@dataclass(frozen=True)
class Data:
    """One draw of the generative process."""

    pop: Population
    title_ids: list[str]
    embedding: np.ndarray  # (users, 16) the fact
    available: np.ndarray  # (titles, countries) bool
    train_user: np.ndarray
    train_title: np.ndarray
    train_label: np.ndarray
    test_user: np.ndarray  # (held-out users,)
    test_titles: np.ndarray  # (held-out users, CANDIDATES)
    test_rel: np.ndarray  # (held-out users, CANDIDATES) graded 0/1/2


def generate(seed: int, n_users: int = 5000) -> Data:
    """Draw users, titles, facts, training impressions and held-out candidates."""
    pop = population(seed, n_users)
    rng = np.random.default_rng([seed, 1])
    n_countries, n_devices = len(COUNTRIES), len(DEVICES)
    z = rng.normal(size=(n_users, LATENT))
    v = rng.normal(size=(N_TITLES, LATENT)) * (1.6 / np.sqrt(LATENT))
    mix = rng.normal(size=(LATENT, EMBEDDING)) / np.sqrt(LATENT)
    embedding = z @ mix + rng.normal(scale=0.35, size=(n_users, EMBEDDING))
    g = rng.normal(size=N_TITLES)
    d = rng.normal(scale=0.6, size=(n_countries, N_TITLES))
    h = rng.normal(scale=0.5, size=(n_devices, N_TITLES))
    available = rng.random((N_TITLES, n_countries)) > 0.15

    def show(users: np.ndarray, m: int) -> np.ndarray:
        keys = rng.random((len(users), N_TITLES))
        keys[~available[:, pop.country[users]].T] = np.inf
        return np.argsort(keys, axis=1)[:, :m]

    def outcome(users: np.ndarray, titles: np.ndarray) -> np.ndarray:
        s = (z[users] * v[titles]).sum(-1) + g[titles] + d[pop.country[users], titles] + h[pop.device[users], titles]
        s = s + rng.logistic(size=s.shape)
        graded: np.ndarray = (s > 2.0).astype(np.int64) + (s > 3.5)
        return graded

    order = rng.permutation(n_users)
    n_test = int(n_users * HOLDOUT)
    test_user, train_user = np.sort(order[:n_test]), np.sort(order[n_test:])
    shown = show(train_user, IMPRESSIONS)
    users = np.repeat(train_user, IMPRESSIONS)
    titles = shown.reshape(-1)
    labels = (outcome(users, titles) >= 1).astype(np.float64)
    candidates = show(test_user, CANDIDATES)
    rel = outcome(np.repeat(test_user, CANDIDATES), candidates.reshape(-1)).reshape(candidates.shape)
    return Data(pop, [f"t-{i}" for i in range(N_TITLES)], embedding, available,
                users, titles, labels, test_user, candidates, rel)


def train(data: Data, *, dim: int, hidden: int | None, device_prior: bool, epochs: int,
          seed: int) -> dict[str, np.ndarray]:
    """Fit the two-tower ranker with minibatch Adam on the logistic loss."""
    rng = np.random.default_rng([seed, 10, dim])
    n_countries, n_devices = len(COUNTRIES), len(DEVICES)
    p: dict[str, np.ndarray] = {
        "title_embedding": rng.normal(scale=0.1, size=(N_TITLES, dim)),
        "country_bias": np.zeros((n_countries, N_TITLES)),
        "user_projection": rng.normal(scale=0.1, size=(hidden or EMBEDDING, dim)),
    }
    if hidden:
        p["user_hidden"] = rng.normal(scale=1 / np.sqrt(EMBEDDING), size=(EMBEDDING, hidden))
        p["user_hidden_bias"] = np.full(hidden, 0.1)
    if device_prior:
        p["device_bias"] = np.zeros((n_devices, N_TITLES))
    opt = Adam(p, lr=0.01, l2=1e-5)
    emb, country, device = data.embedding, data.pop.country, data.pop.device
    n = len(data.train_label)
    for _ in range(epochs):
        for batch in np.array_split(rng.permutation(n), n // 512):
            u, t, y = data.train_user[batch], data.train_title[batch], data.train_label[batch]
            c, dv, e = country[u], device[u], emb[u]
            if hidden:
                pre = e @ p["user_hidden"] + p["user_hidden_bias"]
                act = np.maximum(pre, 0.0)
            else:
                act = e
            pu = act @ p["user_projection"]
            tt = p["title_embedding"][t]
            logit = (pu * tt).sum(1) + p["country_bias"][c, t]
            if device_prior:
                logit += p["device_bias"][dv, t]
            dl = (sigmoid(logit) - y) / len(batch)
            grads = {k: np.zeros_like(v) for k, v in p.items()}
            np.add.at(grads["title_embedding"], t, dl[:, None] * pu)
            np.add.at(grads["country_bias"], (c, t), dl)
            if device_prior:
                np.add.at(grads["device_bias"], (dv, t), dl)
            dpu = dl[:, None] * tt
            grads["user_projection"] = act.T @ dpu
            if hidden:
                dpre = (dpu @ p["user_projection"].T) * (pre > 0)
                grads["user_hidden"] = e.T @ dpre
                grads["user_hidden_bias"] = dpre.sum(0)
            opt.step(grads)
    weights = {k: v.astype(np.float64) for k, v in p.items()}
    weights["title_ids"] = np.asarray(data.title_ids)
    weights["countries"] = np.asarray(COUNTRIES)
    if device_prior:
        weights["devices"] = np.asarray(DEVICES)
    return weights


def popularity(data: Data) -> np.ndarray:
    """The baseline: smoothed per-country play rate of each title in the training data."""
    c = data.pop.country[data.train_user]
    shows = np.zeros((len(COUNTRIES), N_TITLES))
    plays = np.zeros_like(shows)
    np.add.at(shows, (c, data.train_title), 1.0)
    np.add.at(plays, (c, data.train_title), data.train_label)
    overall = (plays.sum(0) + 1.0) / (shows.sum(0) + 2.0)
    smoothed: np.ndarray = (plays + 5.0 * overall) / (shows + 5.0)
    return smoothed


def test_items(data: Data) -> list[Item]:
    """The held-out users' candidate lists as serving requests."""
    pop = data.pop
    return [
        Item(
            {"user_id": pop.user_ids[u], "country": COUNTRIES[pop.country[u]],
             "device": DEVICES[pop.device[u]], "surface": "home"},
            {"titles": [data.title_ids[t] for t in titles], "k": CANDIDATES},
        )
        for u, titles in zip(data.test_user.tolist(), data.test_titles.tolist())
    ]


def ranking_metrics(ranked: list[list[int]], data: Data) -> dict[str, float]:
    """NDCG@10 and MRR of rankings (title indices, best first) of the held-out candidates."""
    gains, ranked_gains, rr = [], [], []
    for row, order in enumerate(ranked):
        rel = dict(zip(data.test_titles[row].tolist(), data.test_rel[row].tolist()))
        g = np.array([2.0 ** rel[t] - 1 for t in order])
        ranked_gains.append(g)
        gains.append(2.0 ** data.test_rel[row] - 1)
        hit = np.flatnonzero(g > 0)
        if (data.test_rel[row] > 0).any():
            rr.append(1.0 / (hit[0] + 1) if len(hit) else 0.0)
    return {"ndcg_at_10": round(ndcg_at_k(ranked_gains, gains, 10), 6), "mrr": round(float(np.mean(rr)), 6)}


def evaluate_model(model: Any, data: Data) -> dict[str, float]:
    """Metrics of a served model on the held-out requests (one batch)."""
    index = {t: i for i, t in enumerate(data.title_ids)}
    outcomes = model.score_batch(test_items(data))
    return ranking_metrics([[index[r["title"]] for r in o.value["ranking"]] for o in outcomes], data)


def evaluate_baseline(data: Data) -> dict[str, float]:
    """Metrics of the popularity-only baseline on the same held-out requests."""
    rate = popularity(data)
    ranked = []
    for u, titles in zip(data.test_user, data.test_titles):
        scores = rate[data.pop.country[u], titles]
        ranked.append(titles[np.argsort(-scores, kind="stable")].tolist())
    return ranking_metrics(ranked, data)


VERSIONS: dict[str, dict[str, Any]] = {
    "v1": {"dim": 16, "hidden": None, "device_prior": False, "epochs": 6},
    "v2": {"dim": 16, "hidden": 32, "device_prior": True, "epochs": 8},
}

INPUT_SCHEMA = {
    "type": "object",
    "description": "payload; context needs user_id (string), reads country, device",
    "required": ["titles"],
    "properties": {
        "titles": {"type": "array", "items": {"type": "string"}, "maxItems": 1000},
        "k": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
    },
}
OUTPUT_SCHEMA = {
    "type": "object",
    "required": ["ranking", "unknown_titles"],
    "properties": {
        "ranking": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["title", "score"],
                "properties": {"title": {"type": "string"}, "score": {"type": "number"}},
            },
        },
        "unknown_titles": {"type": "array", "items": {"type": "string"}},
    },
}


def write_facts(facts_dir: Path, data: Data) -> None:
    """Write the facts this objective reads (and the shared user profile)."""
    facts_dir.mkdir(parents=True, exist_ok=True)
    write_fact_npz(facts_dir, USER_EMBEDDING, data.pop.user_ids, data.embedding, dtype=np.float32)
    write_fact_json(facts_dir, TITLE_AVAILABILITY, data.title_ids, data.available.astype(np.float64))
    write_user_profile(facts_dir, data.pop)


def main() -> None:
    """Generate, train v1 and v2, evaluate, write packages and facts."""
    args = cli(__doc__.splitlines()[0])
    started = time.perf_counter()
    data = generate(args.seed)
    facts_dir, models_dir = args.out / "facts", args.out / "models"
    write_facts(facts_dir, data)
    facts = InMemoryFactStore.from_dir(facts_dir)
    baseline = evaluate_baseline(data)
    process = __doc__.split("Generative process", 1)[1].split("Metrics,", 1)[0]
    for version, cfg in VERSIONS.items():
        weights = train(data, seed=args.seed, **cfg)
        manifest = Manifest(
            name="title-ranking",
            version=version,
            objective="title-ranking",
            workflow="title_ranking",
            description=(
                f"Two-tower title ranker: {'ReLU MLP' if cfg['hidden'] else 'linear'} user tower over the "
                f"user_embedding fact, {cfg['dim']}-dim title embeddings, per-country popularity prior"
                f"{' and per-device prior' if cfg['device_prior'] else ''}, availability filter, top-k."
            ),
            facts=("user_embedding", "title_availability"),
            input_schema=INPUT_SCHEMA,
            output_schema=OUTPUT_SCHEMA,
            params={
                "k_default": 10,
                "k_max": 100,
                "max_titles": 1000,
                "user_tower": "mlp" if cfg["hidden"] else "linear",
                "device_prior": cfg["device_prior"],
            },
            weights=weight_specs(weights),
            training={
                "script": "workflows.training.title_ranking",
                "seed": args.seed,
                "date": args.date,
                "generative_process": " ".join(process.split()).lstrip(": "),
                "data_sizes": {
                    "users": len(data.pop.user_ids),
                    "titles": N_TITLES,
                    "countries": len(COUNTRIES),
                    "train_users": len(np.unique(data.train_user)),
                    "train_impressions": len(data.train_label),
                    "heldout_users": len(data.test_user),
                    "heldout_candidates_per_user": CANDIDATES,
                },
                "hyperparameters": {**cfg, "optimizer": "adam", "lr": 0.01, "l2": 1e-5, "batch": 512},
            },
            metrics={},
            baseline="popularity only: smoothed per-country play rate of each title in the training data",
            baseline_metrics=baseline,
        )
        directory = models_dir / manifest.id
        # Write once to evaluate the package exactly as served, then again with its metrics.
        write_package(directory, _with_metrics(manifest, {k: 0.0 for k in baseline}), weights)
        metrics = evaluate_model(build_model(directory, facts), data)
        write_package(directory, _with_metrics(manifest, metrics), weights)
        print(json.dumps({"model": manifest.id, "metrics": metrics, "baseline_metrics": baseline}))
    print(json.dumps({"seconds": round(time.perf_counter() - started, 1)}))


def _with_metrics(manifest: Manifest, metrics: dict[str, float]) -> Manifest:
    from dataclasses import replace

    return replace(manifest, metrics=metrics)


if __name__ == "__main__":
    main()
