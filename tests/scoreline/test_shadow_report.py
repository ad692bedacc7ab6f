"""The shadow report: aggregation, intervals, slices, --since, the figure."""

from __future__ import annotations

import math

import pytest

from schemas.errors import InvalidMessage
from schemas.messages import Comparison
from scoreline.shadow_report import dedupe, format_table, parse_since, plot, summarize


def comparison(i: int, *, overlap: float = 1.0, tau: float = 1.0, top1: bool = True, country: str = "US",
               matched: bool = True, reason: str | None = None, shadow: str = "m@v2", p_ms: float = 2.0,
               s_ms: float = 3.0, shadow_status: str | None = "ok") -> Comparison:
    measures = {"kind": "ranking", "top_k": 5, "top_k_overlap": overlap, "top1_agrees": top1, "common": 5,
                "kendall_tau": tau, "score_delta_mean": 0.01, "score_delta_mean_abs": 0.02,
                "score_delta_max_abs": 0.05} if matched else {}
    return Comparison(f"r-{i}", "title-ranking", "m@v1", shadow, matched, reason, 1, None, "ok", shadow_status,
                      p_ms, s_ms if shadow_status else None, measures, "live",
                      {"country": country, "device": "tv", "client": "demo"}, 1000 + i)


def probability(i: int, p: float, q: float, band_p: str, band_q: str) -> Comparison:
    measures = {"kind": "probability", "primary_probability": p, "shadow_probability": q, "delta": q - p,
                "abs_diff": abs(q - p), "primary_band": band_p, "shadow_band": band_q,
                "band_agrees": band_p == band_q}
    return Comparison(f"f-{i}", "fraud-score", "f@v1", "f@v2", True, None, 1, None, "ok", "ok", 1.0, 1.5,
                      measures, "live", {"country": "DE"}, 1000 + i)


def test_counts_rates_and_means_match_direct_computation() -> None:
    items = [comparison(i, overlap=i / 10, tau=(i - 5) / 5, top1=i % 2 == 0, s_ms=2.0 + i) for i in range(10)]
    items += [comparison(10, matched=False, reason="shadow_failed", shadow_status="error"),
              comparison(11, matched=False, reason="timed_out", shadow_status=None)]
    report = summarize(items)
    (pair,) = report["pairs"]
    assert (pair["objective"], pair["primary"], pair["shadow"]) == ("title-ranking", "m@v1", "m@v2")
    assert (pair["count"], pair["matched"]) == (12, 10)
    assert pair["unmatched"] == {"shadow_failed": 1, "timed_out": 1}
    overlap = pair["agreement"]["top_k_overlap"]
    values = [i / 10 for i in range(10)]
    mean = sum(values) / 10
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 9)
    assert overlap["mean"] == pytest.approx(mean) and overlap["n"] == 10
    assert overlap["ci95"] == pytest.approx([mean - 1.96 * sd / math.sqrt(10), mean + 1.96 * sd / math.sqrt(10)],
                                            abs=1e-3)
    top1 = pair["agreement"]["top1_agrees"]
    assert top1["rate"] == 0.5 and 0.2 < top1["ci95"][0] < 0.5 < top1["ci95"][1] < 0.8  # Wilson, n=10
    # Latency delta over the 11 comparisons whose two sides arrived: i ms for i < 10, 1 ms for the failed one.
    deltas = sorted([*range(10), 1])
    assert pair["latency_delta_ms"]["p50"] == deltas[5] == 4
    assert pair["latency_delta_ms"]["p99"] == pytest.approx(8 + 0.9, abs=1e-3)  # numpy's linear interpolation
    assert pair["error_rate"] == {"primary": 0.0, "shadow": pytest.approx(1 / 11, abs=1e-4)}


def test_worst_slices_point_at_the_disagreeing_country() -> None:
    items = [comparison(i, overlap=1.0, country="US") for i in range(20)]
    items += [comparison(100 + i, overlap=0.2, country="BR") for i in range(6)]
    (pair,) = summarize(items)["pairs"]
    worst = pair["worst_slices"][0]
    assert (worst["field"], worst["value"], worst["n"], worst["top_k_overlap"]) == ("country", "BR", 6, 0.2)
    assert worst["vs_overall"] < 0


def test_repeats_count_once_and_objective_filters() -> None:
    items = [comparison(1), comparison(1), comparison(2), probability(1, 0.1, 0.5, "low", "review"),
             probability(2, 0.1, 0.15, "low", "low")]
    report = summarize(items)
    assert report["repeats"] == 1 and report["comparisons"] == 4
    assert [p["objective"] for p in report["pairs"]] == ["fraud-score", "title-ranking"]
    fraud = summarize(items, objective="fraud-score")["pairs"]
    assert len(fraud) == 1 and fraud[0]["agreement"]["band_agrees"]["rate"] == 0.5
    assert fraud[0]["agreement"]["abs_diff"]["mean"] == pytest.approx(0.225)
    assert dedupe(items)[1] == 1


def test_since_accepts_ages_and_iso_times_and_names_the_field() -> None:
    now = 10_000_000_000
    assert parse_since("1h", now) == now - 3_600_000
    assert parse_since("90s", now) == now - 90_000
    assert parse_since("1970-01-01T00:00:01Z", now) == 1000
    assert parse_since("1970-01-01T00:00:02", now) == 2000
    with pytest.raises(InvalidMessage) as info:
        parse_since("yesterday", now)
    assert (info.value.code, info.value.field) == ("invalid_value", "since")


def test_table_and_figure(tmp_path) -> None:
    items = [comparison(i, overlap=(i % 5) / 4, country=["US", "DE"][i % 2]) for i in range(30)]
    items += [probability(i, 0.1 * (i % 9), 0.1 * (i % 7), "low", "low" if i % 3 else "review") for i in range(30)]
    report = summarize(items)
    text = format_table(report)
    assert "title-ranking: m@v1 vs m@v2" in text and "top_k_overlap" in text and "band_agrees" in text
    out = tmp_path / "out.png"
    plot(items, report, str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = tmp_path / "empty.png"
    plot([], summarize([]), str(empty))
    assert empty.stat().st_size > 0 and "no comparisons found" in format_table(summarize([]))
