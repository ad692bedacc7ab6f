"""What ``scoreline shadow report`` says: pure aggregation over decoded comparisons, and its figure.

Comparisons are grouped per (objective, primary model, shadow model). For
each group the report gives the count, the match rate, the agreement
measures of :mod:`workflows.agreement` with 95% confidence intervals, the
latency delta (shadow minus primary) p50/p99, the error rate of each side,
and the slices (context field = value) where the candidate disagrees most.

Confidence intervals: means use the normal approximation (mean ± 1.96·s/√n);
rates (match, top-1, decision band) use the Wilson score interval, which
stays inside [0, 1] and behaves at rates near 0 or 1.

The comparator is at-least-once, so a comparison may be repeated; the report
counts each (request id, shadow model) once.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from schemas.errors import ErrorCode, InvalidMessage
from schemas.messages import SLICE_FIELDS, Comparison, Status

__all__ = ["CI_METHOD", "HEADLINE", "dedupe", "format_table", "parse_since", "plot", "summarize"]

CI_METHOD = "95%: normal approximation for means, Wilson score interval for rates"
"How the report's confidence intervals are computed (also in its JSON)."

Z95 = 1.959963984540054

# measure name -> "mean" (averaged) or "rate" (a boolean, reported as a share), per agreement kind.
MEASURES: dict[str, dict[str, str]] = {
    "ranking": {"top_k_overlap": "mean", "kendall_tau": "mean", "top1_agrees": "rate",
                "score_delta_mean": "mean", "score_delta_mean_abs": "mean"},
    "probability": {"abs_diff": "mean", "delta": "mean", "band_agrees": "rate"},
    "other": {"equal": "rate"},
}

HEADLINE: dict[str, str] = {"ranking": "top_k_overlap", "probability": "band_agrees", "other": "equal"}
"The one agreement measure per kind that slices are ranked by (higher agrees more)."

SLICE_BY: tuple[str, ...] = (*SLICE_FIELDS, "traffic")

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now_ms: int) -> int:
    """``--since`` as epoch milliseconds: a relative age (``90s``, ``15m``, ``1h``, ``2d``) or an ISO time.

    An ISO time without a zone is taken as UTC.

    Raises:
        InvalidMessage: ``invalid_value`` naming ``since``.
    """
    if m := _RELATIVE.match(text):
        return now_ms - int(float(m.group(1)) * _UNIT_S[m.group(2)] * 1000)
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidMessage(ErrorCode.INVALID_VALUE, f"since must be an ISO time (2026-01-31T12:00:00Z) or an "
                             f"age such as 30m, 1h or 2d, got {text[:40]!r}", field="since") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def summarize(comparisons: Sequence[Comparison], *, objective: str | None = None, top_slices: int = 3,
              min_slice: int = 5) -> dict[str, Any]:
    """The report as a JSON-ready dict: ``{"pairs": [...], "comparisons", "repeats", "ci_method"}``."""
    unique, repeats = dedupe(comparisons)
    groups: dict[tuple[str, str, str], list[Comparison]] = defaultdict(list)
    for c in unique:
        if objective is None or c.objective == objective:
            groups[(c.objective, c.primary_model, c.shadow_model)].append(c)
    pairs = [_pair(key, items, top_slices, min_slice) for key, items in sorted(groups.items())]
    return {"pairs": pairs, "comparisons": sum(p["count"] for p in pairs), "repeats": repeats,
            "ci_method": CI_METHOD}


def dedupe(comparisons: Sequence[Comparison]) -> tuple[list[Comparison], int]:
    """The first comparison per (request id, shadow model), and how many repeats were dropped."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for c in comparisons:
        key = (c.request_id, c.shadow_model)
        if key not in seen:
            seen.add(key)
            kept.append(c)
    return kept, len(comparisons) - len(kept)


def _pair(key: tuple[str, str, str], items: list[Comparison], top_slices: int, min_slice: int) -> dict[str, Any]:
    objective, primary, shadow = key
    matched = [c for c in items if c.matched]
    kind = _kind(matched)
    deltas = [c.shadow_latency_ms - c.primary_latency_ms for c in items
              if c.shadow_latency_ms is not None and c.primary_latency_ms is not None]
    primary_seen = [c for c in items if c.primary_status is not None]
    shadow_seen = [c for c in items if c.shadow_status is not None]
    unmatched: dict[str, int] = defaultdict(int)
    for c in items:
        if not c.matched:
            unmatched[c.reason or "unknown"] += 1
    return {
        "objective": objective,
        "primary": primary,
        "shadow": shadow,
        "count": len(items),
        "matched": len(matched),
        "match_rate": _rate([c.matched for c in items]),
        "unmatched": dict(sorted(unmatched.items())),
        "kind": kind,
        "agreement": {name: (_rate if how == "rate" else _mean)(_values(matched, name))
                      for name, how in MEASURES.get(kind or "", {}).items()},
        "latency_delta_ms": _percentiles(deltas),
        "error_rate": {
            "primary": _share(sum(c.primary_status != Status.OK for c in primary_seen), len(primary_seen)),
            "shadow": _share(sum(c.shadow_status != Status.OK for c in shadow_seen), len(shadow_seen)),
        },
        "worst_slices": _worst_slices(matched, kind, top_slices, min_slice),
    }


def _kind(matched: list[Comparison]) -> str | None:
    kinds = {c.agreement.get("kind") for c in matched}
    return next(iter(kinds)) if len(kinds) == 1 else ("other" if kinds else None)


def _values(items: list[Comparison], name: str) -> list[Any]:
    return [c.agreement[name] for c in items if c.agreement.get(name) is not None]


def _mean(values: list[float]) -> dict[str, Any]:
    n = len(values)
    if n == 0:
        return {"mean": None, "ci95": None, "n": 0}
    arr = np.asarray(values, dtype=float)
    mean = float(arr.mean())
    half = Z95 * float(arr.std(ddof=1)) / math.sqrt(n) if n > 1 else float("nan")
    ci = [_r(mean - half), _r(mean + half)] if n > 1 else None
    return {"mean": _r(mean), "ci95": ci, "n": n}


def _rate(values: list[bool]) -> dict[str, Any]:
    n = len(values)
    if n == 0:
        return {"rate": None, "ci95": None, "n": 0}
    p = sum(bool(v) for v in values) / n
    denom = 1 + Z95 ** 2 / n
    centre = (p + Z95 ** 2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95 ** 2 / (4 * n * n)) / denom
    return {"rate": _r(p), "ci95": [_r(max(0.0, centre - half)), _r(min(1.0, centre + half))], "n": n}


def _share(part: int, whole: int) -> float | None:
    return _r(part / whole) if whole else None


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None}
    arr = np.asarray(values, dtype=float)
    return {"p50": _r(float(np.percentile(arr, 50))), "p99": _r(float(np.percentile(arr, 99)))}


def _headline(c: Comparison, kind: str) -> float | None:
    value = c.agreement.get(HEADLINE[kind])
    return None if value is None else float(value)


def _worst_slices(matched: list[Comparison], kind: str | None, top: int, min_n: int) -> list[dict[str, Any]]:
    """The (field, value) slices with the lowest headline agreement, among those with ``min_n`` comparisons."""
    if kind is None or not matched:
        return []
    overall = [v for c in matched if (v := _headline(c, kind)) is not None]
    if not overall:
        return []
    base = sum(overall) / len(overall)
    by_slice: dict[tuple[str, str], list[float]] = defaultdict(list)
    for c in matched:
        value = _headline(c, kind)
        if value is None:
            continue
        for name in SLICE_BY:
            label = c.traffic if name == "traffic" else c.context.get(name)
            if label is not None:
                by_slice[(name, str(label))].append(value)
    rows: list[dict[str, Any]] = [{"field": name, "value": label, "n": len(vs), HEADLINE[kind]: _r(sum(vs) / len(vs)),
             "vs_overall": _r(sum(vs) / len(vs) - base)}
            for (name, label), vs in by_slice.items() if len(vs) >= min_n]
    rows.sort(key=lambda r: (r["vs_overall"], -r["n"], r["field"], r["value"]))
    return rows[:top]


def _r(x: float) -> float:
    return round(x, 4)


# --- presentation ----------------------------------------------------------------------------


def format_table(report: dict[str, Any]) -> str:
    """The report as text for people."""
    lines = [f"{report['comparisons']} comparisons ({report['repeats']} repeats dropped); CI {report['ci_method']}"]
    if not report["pairs"]:
        lines.append("no comparisons found")
    for p in report["pairs"]:
        mr = p["match_rate"]
        lines.append("")
        lines.append(f"{p['objective']}: {p['primary']} vs {p['shadow']}")
        lines.append(f"  count {p['count']}, matched {p['matched']} ({_pct(mr['rate'])} "
                     f"[{_ci(mr['ci95'], pct=True)}])" + (f", unmatched {p['unmatched']}" if p["unmatched"] else ""))
        for name, stat in p["agreement"].items():
            if "rate" in stat:
                lines.append(f"  {name:<22} {_pct(stat['rate']):>8}   "
                             f"95% CI [{_ci(stat['ci95'], pct=True)}]  n={stat['n']}")
            else:
                mean = "-" if stat["mean"] is None else f"{stat['mean']:.4f}"
                lines.append(f"  {name:<22} {mean:>8}   95% CI [{_ci(stat['ci95'])}]  n={stat['n']}")
        lat, err = p["latency_delta_ms"], p["error_rate"]
        lines.append(f"  latency delta (shadow-primary) p50 {_ms(lat['p50'])}, p99 {_ms(lat['p99'])}")
        lines.append(f"  error rate: primary {_pct(err['primary'])}, shadow {_pct(err['shadow'])}")
        if p["worst_slices"]:
            headline = HEADLINE[p["kind"]]
            worst = "; ".join(f"{s['field']}={s['value']} {headline} {s[headline]:.3f} "
                              f"({s['vs_overall']:+.3f}, n={s['n']})"
                              for s in p["worst_slices"])
            lines.append(f"  most disagreement: {worst}")
    return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _ci(ci: list[float] | None, pct: bool = False) -> str:
    if ci is None:
        return "-"
    return ", ".join(_pct(v) if pct else f"{v:.4f}" for v in ci)


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:+.3f} ms"


def plot(comparisons: Sequence[Comparison], report: dict[str, Any], path: str) -> None:
    """Write a PNG: per compared pair, the distribution of its headline agreement and of its latency delta."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    unique, _ = dedupe(comparisons)
    pairs = report["pairs"] or [None]
    fig, axes = plt.subplots(len(pairs), 2, figsize=(11, 3.4 * len(pairs)), squeeze=False)
    for row, p in zip(axes, pairs):
        if p is None:
            for ax in row:
                ax.text(0.5, 0.5, "no comparisons", ha="center", va="center")
                ax.set_axis_off()
            break
        items = [c for c in unique if (c.objective, c.primary_model, c.shadow_model)
                 == (p["objective"], p["primary"], p["shadow"])]
        title = f"{p['objective']}: {p['primary']} vs {p['shadow']}"
        left, right = row
        kind = p["kind"]
        if kind == "probability":
            values = [c.agreement["abs_diff"] for c in items if c.matched]
            left.hist(values, bins=30, color="tab:blue")
            left.set_xlabel("|shadow - primary| probability")
            agree = p["agreement"]["band_agrees"]["rate"]
            left.set_title(f"{title}\nband agreement {_pct(agree)} (n={len(values)})", fontsize=9)
        elif kind is not None:
            headline = HEADLINE[kind]
            values = [float(c.agreement[headline]) for c in items
                      if c.matched and c.agreement.get(headline) is not None]
            left.hist(values, bins=20, range=(0, 1), color="tab:blue", label=headline)
            taus = [c.agreement["kendall_tau"] for c in items
                    if c.matched and c.agreement.get("kendall_tau") is not None]
            if taus:
                left.hist(taus, bins=40, range=(-1, 1), color="tab:orange", alpha=0.6, label="kendall_tau")
            left.set_xlabel("agreement")
            left.legend(fontsize=8)
            left.set_title(f"{title}\nagreement (n={len(values)})", fontsize=9)
        left.set_ylabel("comparisons")
        deltas = [c.shadow_latency_ms - c.primary_latency_ms for c in items
                  if c.shadow_latency_ms is not None and c.primary_latency_ms is not None]
        right.hist(deltas, bins=40, color="tab:green")
        right.axvline(0, color="black", linewidth=0.8)
        lat = p["latency_delta_ms"]
        right.set_title(f"latency delta shadow - primary: p50 {_ms(lat['p50'])}, p99 {_ms(lat['p99'])}", fontsize=9)
        right.set_xlabel("ms")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
