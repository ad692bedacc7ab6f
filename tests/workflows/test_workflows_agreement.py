"""Agreement measures against direct computation from their definitions."""

from __future__ import annotations

import itertools
import random

import pytest

from workflows.agreement import agreement, kendall_tau, probability_agreement, ranking_agreement


def ranking(*pairs: tuple[str, float]) -> list[dict]:
    return [{"title": t, "score": s} for t, s in pairs]


def direct_tau(a: list[str], b: list[str]) -> float:
    """Kendall's tau from its definition: (concordant - discordant) / pairs, over items in both."""
    common = [x for x in a if x in b]
    concordant = discordant = 0
    for x, y in itertools.combinations(common, 2):
        sign = (a.index(x) - a.index(y)) * (b.index(x) - b.index(y))
        concordant += sign > 0
        discordant += sign < 0
    return (concordant - discordant) / (len(common) * (len(common) - 1) / 2)


def test_identical_rankings_agree_fully() -> None:
    r = ranking(("a", 0.9), ("b", 0.5), ("c", 0.1))
    m = ranking_agreement(r, r)
    assert m == {"kind": "ranking", "top_k": 3, "top_k_overlap": 1.0, "top1_agrees": True, "common": 3,
                 "kendall_tau": 1.0, "score_delta_mean": 0.0, "score_delta_mean_abs": 0.0,
                 "score_delta_max_abs": 0.0}


def test_reversed_ranking_has_tau_minus_one() -> None:
    p = ranking(("a", 0.9), ("b", 0.5), ("c", 0.1))
    s = ranking(("c", 0.8), ("b", 0.5), ("a", 0.2))
    m = ranking_agreement(p, s)
    assert m["kendall_tau"] == -1.0 and m["top1_agrees"] is False
    assert m["score_delta_mean"] == pytest.approx(((0.2 - 0.9) + 0 + (0.8 - 0.1)) / 3)
    assert m["score_delta_max_abs"] == pytest.approx(0.7)


def test_partial_overlap_of_different_lengths() -> None:
    p = ranking(("a", 0.9), ("b", 0.8), ("c", 0.7), ("d", 0.6))
    s = ranking(("b", 0.95), ("x", 0.9), ("a", 0.5))
    m = ranking_agreement(p, s)
    assert m["top_k"] == 3
    assert m["top_k_overlap"] == pytest.approx(2 / 3)  # {a,b,c} vs {b,x,a}
    assert m["common"] == 2
    assert m["kendall_tau"] == -1.0  # a before b in primary, after in shadow
    assert m["score_delta_mean_abs"] == pytest.approx((0.4 + 0.15) / 2)


@pytest.mark.parametrize("seed", range(20))
def test_random_rankings_match_direct_computation(seed: int) -> None:
    rng = random.Random(seed)
    universe = [f"t-{i}" for i in range(15)]
    a, b = rng.sample(universe, 10), rng.sample(universe, rng.randint(2, 12))
    pa = ranking(*((t, rng.random()) for t in a))
    pb = ranking(*((t, rng.random()) for t in b))
    m = agreement({"ranking": pa}, {"ranking": pb})
    k = min(len(a), len(b))
    assert m["top_k_overlap"] == pytest.approx(len(set(a[:k]) & set(b[:k])) / k)
    common = [x for x in a if x in b]
    if len(common) >= 2:
        assert m["kendall_tau"] == pytest.approx(direct_tau(a, b))
    else:
        assert m["kendall_tau"] is None
    sa, sb = {e["title"]: e["score"] for e in pa}, {e["title"]: e["score"] for e in pb}
    if common:
        assert m["score_delta_mean"] == pytest.approx(sum(sb[t] - sa[t] for t in common) / len(common))


def test_kendall_tau_edge_cases() -> None:
    assert kendall_tau([]) is None and kendall_tau([3]) is None
    assert kendall_tau([0, 1]) == 1.0 and kendall_tau([1, 0]) == -1.0
    assert kendall_tau([0, 2, 1, 3]) == pytest.approx(4 / 6)


def test_empty_ranking() -> None:
    m = ranking_agreement([], ranking(("a", 1.0)))
    assert m["top_k"] == 0 and m["top_k_overlap"] is None and m["top1_agrees"] is False
    assert m["kendall_tau"] is None and m["score_delta_mean"] is None


def test_probabilities_and_bands() -> None:
    m = agreement({"probability": 0.1, "band": "low"}, {"probability": 0.35, "band": "review"})
    assert m["kind"] == "probability"
    assert m["delta"] == pytest.approx(0.25) and m["abs_diff"] == pytest.approx(0.25)
    assert m["band_agrees"] is False
    assert probability_agreement(0.5, 0.4, "low", "low")["band_agrees"] is True
    assert probability_agreement(0.5, 0.4)["band_agrees"] is None


def test_other_outputs_only_say_whether_equal() -> None:
    assert agreement({"x": 1}, {"x": 1}) == {"kind": "other", "equal": True}
    assert agreement({"ranking": []}, {"probability": 0.2}) == {"kind": "other", "equal": False}
