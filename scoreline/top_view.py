"""What ``scoreline top`` shows, computed from two metric scrapes: pure, no I/O, no clock.

A :class:`Scrape` is the samples of one or more ``/metrics`` endpoints at one moment.
:func:`summarise` turns two of them (before, after) into a :class:`View` — rates over the
interval, p50/p99 from the histogram buckets that moved, error and dead-letter rates, lag per
shard topic, the rules versions in force — and :func:`render` draws it as text. Shadow
agreement comes from the comparison records (:func:`agreement`), when there are any.

A counter that went down between scrapes belongs to a restarted process: its new value is
the increase (as Prometheus' ``rate`` treats a reset).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from streams.quantiles import bucket_quantile as quantile

__all__ = ["Scrape", "View", "ModelRow", "ScoringRow", "parse", "merge", "summarise", "agreement", "render", "quantile",
           "rollout_lines"]

Key = tuple[str, str, tuple[tuple[str, str], ...]]
"""(source, sample name, sorted label pairs)."""


@dataclass(frozen=True)
class Scrape:
    """Samples of one or more endpoints, taken at ``at`` (seconds on any monotonic clock)."""

    at: float
    samples: Mapping[Key, float]
    errors: tuple[str, ...] = ()
    """Endpoints that could not be read, with why."""


def parse(text: str, *, source: str, at: float) -> Scrape:
    """One endpoint's Prometheus text, as a :class:`Scrape`."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(source, sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return Scrape(at=at, samples=samples)


def merge(scrapes: Iterable[Scrape], *, at: float | None = None) -> Scrape:
    """Several endpoints' scrapes as one (their samples stay apart by source)."""
    scrapes = list(scrapes)
    samples: dict[Key, float] = {}
    errors: list[str] = []
    for scrape in scrapes:
        samples.update(scrape.samples)
        errors.extend(scrape.errors)
    when = at if at is not None else max((s.at for s in scrapes), default=0.0)
    return Scrape(at=when, samples=samples, errors=tuple(errors))


@dataclass
class ModelRow:
    """One (role, objective, model) line of the view."""

    role: str
    objective: str
    model: str
    total: float = 0.0
    """Results since the processes started."""
    window: float = 0.0
    """Results in the interval."""
    errors: float = 0.0
    expired: float = 0.0
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None


@dataclass
class ScoringRow:
    """One (role, model) line of the scoring section: the model's batcher and its calls."""

    role: str
    model: str
    queued: float = 0.0
    in_flight: float = 0.0
    wait_p50_ms: float | None = None
    wait_p99_ms: float | None = None
    mean_cost: float | None = None
    """What a call cost on average in the window (items, or the model's batch_cost)."""
    calls_per_s: float | None = None
    timeouts: float = 0.0
    """Requests answered workflow_timeout in the window (since start, with one scrape)."""


@dataclass
class View:
    """Everything one frame shows."""

    interval: float | None
    """Seconds between the two scrapes (None: one scrape, figures are totals since start)."""
    models: list[ModelRow] = field(default_factory=list)
    routed: list[tuple[str, str, str, str, float, float | None]] = field(default_factory=list)
    """(objective, model, cell, traffic, share of the objective's routed requests in the window, rps)."""
    dead_letters: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    """code -> (total, per second)."""
    lag: dict[str, dict[int, float]] = field(default_factory=dict)
    """topic -> partition -> records behind."""
    rules_versions: dict[int, int] = field(default_factory=dict)
    """rules version -> how many processes run it."""
    scoring: list[ScoringRow] = field(default_factory=list)
    threads: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    """scoring executor -> (threads, share of their time in calls over the window)."""
    loops: list[tuple[str, str, float | None, float | None, float | None]] = field(default_factory=list)
    """(endpoint, loop, p50 ms, p99 ms over the window, worst ms since start): how late each process's event loops
    run what is ready (``streams.ops.loop_lag``)."""
    sources: int = 0
    errors: tuple[str, ...] = ()


def _by(scrape: Scrape | None, name: str) -> dict[tuple[str, tuple], float]:
    if scrape is None:
        return {}
    return {(src, labels): v for (src, n, labels), v in scrape.samples.items() if n == name}


def _increase(before: Scrape | None, after: Scrape, name: str) -> dict[tuple[str, tuple], float]:
    """Per (source, labels): how much a counter grew (a drop means a restart: the new value)."""
    old = _by(before, name)
    out = {}
    for key, value in _by(after, name).items():
        prior = old.get(key, 0.0)
        out[key] = value - prior if value >= prior else value
    return out


def summarise(before: Scrape | None, after: Scrape) -> View:
    """The frame for the interval between ``before`` and ``after`` (or totals, without ``before``)."""
    interval = after.at - before.at if before is not None and after.at > before.at else None
    view = View(interval=interval, errors=after.errors)
    view.sources = len({src for src, _, _ in after.samples})

    def rate(n: float) -> float | None:
        return n / interval if interval else None

    totals: dict[tuple[str, str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    window: dict[tuple[str, str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for (_, labels), v in _by(after, "scoreline_results_total").items():
        d = dict(labels)
        totals[(d.get("role", ""), d.get("objective", ""), d.get("model", ""))][d.get("status", "")] += v
    for (_, labels), v in _increase(before, after, "scoreline_results_total").items():
        d = dict(labels)
        window[(d.get("role", ""), d.get("objective", ""), d.get("model", ""))][d.get("status", "")] += v
    buckets: dict[tuple[str, str, str], dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for (_, labels), v in _increase(before, after, "scoreline_result_latency_seconds_bucket").items():
        d = dict(labels)
        buckets[(d.get("role", ""), d.get("objective", ""), d.get("model", ""))][float(d["le"])] += v
    for key in sorted(totals, key=lambda k: (k[0] != "worker", k[1], k[2])):
        moved = window.get(key, {})
        n = sum(moved.values())
        p50, p99 = quantile(0.5, buckets.get(key, {})), quantile(0.99, buckets.get(key, {}))
        view.models.append(ModelRow(
            role=key[0], objective=key[1], model=key[2], total=sum(totals[key].values()), window=n,
            errors=moved.get("error", 0.0), expired=moved.get("expired", 0.0), rps=rate(n),
            p50_ms=None if p50 is None else p50 * 1000, p99_ms=None if p99 is None else p99 * 1000))

    routed: dict[tuple[str, str, str, str], float] = defaultdict(float)
    for (_, labels), v in _increase(before, after, "scoreline_requests_routed_total").items():
        d = dict(labels)
        routed[(d.get("objective", ""), d.get("model", ""), d.get("cell", ""), d.get("traffic", ""))] += v
    per_objective: dict[str, float] = defaultdict(float)
    for (objective, *_), v in routed.items():
        per_objective[objective] += v
    for route in sorted(routed):
        share = routed[route] / per_objective[route[0]] if per_objective[route[0]] else 0.0
        view.routed.append((*route, share, rate(routed[route])))

    dead_total: dict[str, float] = defaultdict(float)
    dead_window: dict[str, float] = defaultdict(float)
    for (_, labels), v in _by(after, "scoreline_dead_letters_total").items():
        dead_total[dict(labels).get("code", "")] += v
    for (_, labels), v in _increase(before, after, "scoreline_dead_letters_total").items():
        dead_window[dict(labels).get("code", "")] += v
    view.dead_letters = {code: (dead_total[code], rate(dead_window.get(code, 0.0))) for code in sorted(dead_total)}

    lag: dict[str, dict[int, float]] = defaultdict(dict)
    for (_, labels), v in _by(after, "scoreline_consumer_lag_records").items():
        d = dict(labels)
        lag[d.get("topic", "")][int(d.get("partition", "0"))] = v
    view.lag = {topic: dict(sorted(parts.items())) for topic, parts in sorted(lag.items())}

    versions: dict[int, int] = defaultdict(int)
    for value in _by(after, "scoreline_rules_version").values():
        versions[int(value)] += 1
    view.rules_versions = dict(sorted(versions.items()))
    _scoring(view, before, after, rate)
    _loops(view, before, after)
    return view


def _loops(view: View, before: Scrape | None, after: Scrape) -> None:
    """Each endpoint's event loops: lateness percentiles from the buckets that moved, and the worst so far."""
    buckets: dict[tuple[str, str], dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for (source, labels), v in _increase(before, after, "scoreline_event_loop_lag_seconds_bucket").items():
        d = dict(labels)
        buckets[(source, d.get("loop", ""))][float(d["le"])] += v
    worst = {(source, dict(labels).get("loop", "")): v
             for (source, labels), v in _by(after, "scoreline_event_loop_lag_max_seconds").items()}

    def ms(value: float | None) -> float | None:
        return None if value is None else value * 1000

    for key in sorted(set(buckets) | set(worst)):
        moved = buckets.get(key, {})
        view.loops.append((*key, ms(quantile(0.5, moved)), ms(quantile(0.99, moved)), ms(worst.get(key))))


def _scoring(view: View, before: Scrape | None, after: Scrape, rate) -> None:
    """The batchers' queues, waits and call costs, and how busy the scoring threads were."""
    rows: dict[tuple[str, str], ScoringRow] = {}

    def row(labels: tuple) -> ScoringRow:
        d = dict(labels)
        key = (d.get("role", ""), d.get("model", ""))
        return rows.setdefault(key, ScoringRow(*key))

    for (_, labels), v in _by(after, "scoreline_scoring_queue_requests").items():
        row(labels).queued += v
    for (_, labels), v in _by(after, "scoreline_scoring_calls_in_flight").items():
        row(labels).in_flight += v
    for (_, labels), v in _increase(before, after, "scoreline_workflow_timeouts_total").items():
        row(labels).timeouts += v
    waits: dict[tuple[str, str], dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for (_, labels), v in _increase(before, after, "scoreline_scoring_queue_wait_seconds_bucket").items():
        d = dict(labels)
        waits[(d.get("role", ""), d.get("model", ""))][float(d["le"])] += v
    spent: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])  # calls, cost
    cost = _increase(before, after, "scoreline_scoring_batch_cost_sum")
    for (src, labels), n in _increase(before, after, "scoreline_scoring_batch_cost_count").items():
        r = row(labels)
        per_s = rate(n)
        if per_s is not None:
            r.calls_per_s = (r.calls_per_s or 0.0) + per_s
        tally = spent[(r.role, r.model)]
        tally[0] += n
        tally[1] += cost.get((src, labels), 0.0)
    for key, (n, total) in spent.items():
        rows[key].mean_cost = total / n if n else None
    for key, buckets in waits.items():
        if key in rows:
            p50, p99 = quantile(0.5, buckets), quantile(0.99, buckets)
            rows[key].wait_p50_ms = None if p50 is None else p50 * 1000
            rows[key].wait_p99_ms = None if p99 is None else p99 * 1000
    view.scoring = [rows[k] for k in sorted(rows)]
    busy = _increase(before, after, "scoreline_scoring_busy_seconds_total")
    for (src, labels), threads in _by(after, "scoreline_scoring_threads").items():
        name = f"{src} {dict(labels).get('executor', '')}".strip()
        busy_per_s = rate(busy[(src, labels)]) if (src, labels) in busy else None
        view.threads[name] = (threads, busy_per_s / threads if busy_per_s is not None and threads else None)


def agreement(comparisons: Iterable[Mapping]) -> dict[tuple[str, str, str], dict[str, float | None]]:
    """Shadow agreement per (objective, primary model, shadow model) from comparison records (dicts).

    ``agree`` is the share of matched comparisons whose top item (rankings) or decision band
    (probabilities) is the same; ``overlap`` the mean top-k overlap of rankings, ``abs_diff`` the
    mean absolute probability difference.
    """
    acc: dict[tuple[str, str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for c in comparisons:
        key = (str(c.get("objective")), str(c.get("primary_model")), str(c.get("shadow_model")))
        row = acc[key]
        row["n"] += 1
        if not c.get("matched"):
            continue
        row["matched"] += 1
        a = c.get("agreement") or {}
        if a.get("kind") == "ranking":
            row["agree"] += bool(a.get("top1_agrees"))
            if a.get("top_k_overlap") is not None:
                row["overlap_sum"] += a["top_k_overlap"]
                row["overlap_n"] += 1
        elif a.get("kind") == "probability":
            row["agree"] += a.get("primary_band") == a.get("shadow_band")
            if a.get("abs_diff") is not None:
                row["diff_sum"] += a["abs_diff"]
                row["diff_n"] += 1
    out = {}
    for key, row in sorted(acc.items()):
        matched = row["matched"]
        out[key] = {
            "n": row["n"], "matched": matched,
            "agree": row["agree"] / matched if matched else None,
            "overlap": row["overlap_sum"] / row["overlap_n"] if row["overlap_n"] else None,
            "abs_diff": row["diff_sum"] / row["diff_n"] if row["diff_n"] else None,
        }
    return out


def _num(value: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.2f}%" if whole else "-"


def rollout_lines(rollouts: Iterable[Mapping]) -> list[str]:
    """The guarded rollouts in progress (records of ``streams.rollouts`` as JSON), one line each."""
    lines = [f"{'ROLLOUT':<7} {'OBJECTIVE':<16} {'CANDIDATE':<22} {'STATE':<8} {'NOW':>5} {'STEP':>9} "
             f"{'CAND N':>7} {'INC N':>7}  GUARDS"]
    for r in rollouts:
        steps = r.get("steps") or []
        step = steps[min(r.get("step", 0), len(steps) - 1)] if steps else {}
        evidence = step.get("evidence") or {}
        guards = " ".join(f"{j['guard']}={j['verdict']}" for j in step.get("judgements") or ())
        position = f"{r.get('step', 0) + 1}/{len(steps)}"
        lines.append(f"{'':<7} {str(r.get('objective'))[:16]:<16} {str(r.get('candidate'))[:22]:<22} "
                     f"{str(r.get('state')):<8} {r.get('percent', 0):>4g}% {position:>9} "
                     f"{(evidence.get('candidate') or {}).get('results', 0):>7} "
                     f"{(evidence.get('incumbent') or {}).get('results', 0):>7}  {guards or '-'}")
        if r.get("state") == "paused" and r.get("reason"):
            lines.append(f"{'':<7}   paused: {r['reason'][:110]}")
    return lines


def render(view: View, shadow: Mapping[tuple[str, str, str], Mapping] | None = None, *,
           title: str = "scoreline top", rollouts: Iterable[Mapping] | None = None) -> str:
    """The frame as text: a header, then models, routing, dead letters, lag and shadow agreement."""
    lines = []
    versions = ", ".join(f"v{v}×{n}" for v, n in view.rules_versions.items()) or "-"
    mixed = "  (MIXED: a rollout or rollback is in progress)" if len(view.rules_versions) > 1 else ""
    window = f"last {view.interval:.1f}s" if view.interval else "totals since start"
    lines.append(f"{title} — {view.sources} endpoint(s), {window}, rules {versions}{mixed}")
    for error in view.errors:
        lines.append(f"  ! {error}")
    lines.append("")
    lines.append(f"{'ROLE':<7} {'OBJECTIVE':<16} {'MODEL':<22} {'RPS':>8} {'TOTAL':>9} {'ERR%':>7} {'EXP%':>7} "
                 f"{'P50ms':>8} {'P99ms':>8}")
    for row in view.models:
        lines.append(f"{row.role:<7} {row.objective[:16]:<16} {row.model[:22]:<22} {_num(row.rps):>8} "
                     f"{row.total:>9.0f} {_pct(row.errors, row.window):>7} {_pct(row.expired, row.window):>7} "
                     f"{_num(row.p50_ms):>8} {_num(row.p99_ms):>8}")
    if not view.models:
        lines.append("  (no results yet)")
    lines.append("")
    lines.append(f"{'ROUTED':<7} {'OBJECTIVE':<16} {'MODEL':<22} {'CELL':<8} {'TRAFFIC':<8} {'SHARE':>7} {'RPS':>8}")
    for objective, model, cell, traffic, share, rps in view.routed:
        lines.append(f"{'':<7} {objective[:16]:<16} {model[:22]:<22} {cell or '-':<8} {traffic:<8} "
                     f"{100 * share:>6.1f}% {_num(rps):>8}")
    if not view.routed:
        lines.append("  (nothing routed in the window)")
    lines.append("")
    if view.dead_letters:
        lines.append("DEAD LETTERS  " + "  ".join(f"{code}: {total:.0f} ({_num(rps, '{:.2f}')}/s)"
                                                  for code, (total, rps) in view.dead_letters.items()))
    else:
        lines.append("DEAD LETTERS  none")
    lines.append("")
    lines.append(f"{'SCORING':<7} {'MODEL':<26} {'QUEUED':>7} {'CALLING':>8} {'CALLS/s':>8} {'COST':>7} "
                 f"{'WAITp50':>8} {'WAITp99':>8} {'TIMEOUTS':>9}")
    for r in view.scoring:
        lines.append(f"{r.role:<7} {r.model[:26]:<26} {r.queued:>7.0f} {r.in_flight:>8.0f} {_num(r.calls_per_s):>8} "
                     f"{_num(r.mean_cost):>7} {_num(r.wait_p50_ms, '{:.2f}'):>8} {_num(r.wait_p99_ms, '{:.2f}'):>8} "
                     f"{r.timeouts:>9.0f}")
    if not view.scoring:
        lines.append("  (no worker reports its batcher)")
    for name, (threads, busy) in view.threads.items():
        lines.append(f"  scoring threads {name}: {threads:.0f}, busy "
                     f"{_num(None if busy is None else 100 * busy, '{:.0f}%')}")
    lines.append("")
    lines.append(f"{'LOOP':<7} {'ENDPOINT':<40} {'LOOP':<6} {'LATEp50':>8} {'LATEp99':>8} {'WORST':>8}  (ms)")
    for source, loop, p50, p99, worst in view.loops:
        lines.append(f"{'':<7} {source[-40:]:<40} {loop:<6} {_num(p50, '{:.2f}'):>8} {_num(p99, '{:.2f}'):>8} "
                     f"{_num(worst, '{:.1f}'):>8}")
    if not view.loops:
        lines.append("  (no process reports its event loop)")
    lines.append("")
    lines.append(f"{'LAG':<7} {'TOPIC':<40} {'TOTAL':>8}  PER PARTITION")
    for topic, parts in view.lag.items():
        lines.append(f"{'':<7} {topic[-40:]:<40} {sum(parts.values()):>8.0f}  "
                     + " ".join(f"p{p}={v:.0f}" for p, v in parts.items()))
    if not view.lag:
        lines.append("  (no partitions reported)")
    lines.append("")
    if shadow is None:
        lines.append("SHADOW AGREEMENT  n/a (no comparison records)")
    else:
        lines.append(f"{'SHADOW':<7} {'OBJECTIVE':<16} {'PRIMARY → CANDIDATE':<40} {'N':>7} {'MATCHED':>8} "
                     f"{'AGREE':>7} {'OVERLAP':>8} {'|Δp|':>7}")
        for (objective, primary, candidate), pair_row in shadow.items():
            pair = f"{primary} → {candidate}"
            agree = pair_row["agree"]
            lines.append(f"{'':<7} {objective[:16]:<16} {pair[:40]:<40} {pair_row['n']:>7.0f} "
                         f"{pair_row['matched']:>8.0f} {_num(None if agree is None else 100 * agree, '{:.1f}%'):>7} "
                         f"{_num(pair_row['overlap'], '{:.3f}'):>8} {_num(pair_row['abs_diff'], '{:.4f}'):>7}")
    rollouts = list(rollouts or ())
    if rollouts:
        lines.append("")
        lines.extend(rollout_lines(rollouts))
    return "\n".join(lines) + "\n"
