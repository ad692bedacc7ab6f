"""``scoreline top``'s view: rates, quantiles, lag and agreement computed from two scrapes (pure)."""

from __future__ import annotations

import pytest

from scoreline import top_view
from scoreline.commands.top import endpoint_url

BEFORE = """\
# TYPE scoreline_results_total counter
scoreline_results_total{role="worker",shard="s1",objective="title-ranking",model="title-ranking@v1",status="ok"} 100
scoreline_results_total{role="worker",shard="s1",objective="title-ranking",model="title-ranking@v1",status="error"} 0
# TYPE scoreline_result_latency_seconds histogram
scoreline_result_latency_seconds_bucket{role="worker",objective="title-ranking",model="title-ranking@v1",le="0.01"} 50
scoreline_result_latency_seconds_bucket{role="worker",objective="title-ranking",model="title-ranking@v1",le="0.1"} 100
scoreline_result_latency_seconds_bucket{role="worker",objective="title-ranking",model="title-ranking@v1",le="+Inf"} 100
scoreline_result_latency_seconds_count{role="worker",objective="title-ranking",model="title-ranking@v1"} 100
scoreline_result_latency_seconds_sum{role="worker",objective="title-ranking",model="title-ranking@v1"} 2
# TYPE scoreline_requests_routed_total counter
scoreline_requests_routed_total{objective="title-ranking",model="title-ranking@v1",cell="",traffic="live"} 100
# TYPE scoreline_dead_letters_total counter
scoreline_dead_letters_total{role="router",code="malformed_json"} 1
# TYPE scoreline_rules_version gauge
scoreline_rules_version 7
"""

AFTER = """\
# TYPE scoreline_results_total counter
scoreline_results_total{role="worker",shard="s1",objective="title-ranking",model="title-ranking@v1",status="ok"} 290
scoreline_results_total{role="worker",shard="s1",objective="title-ranking",model="title-ranking@v1",status="error"} 10
scoreline_results_total{role="worker",shard="s1",objective="title-ranking",model="title-ranking@v3",status="ok"} 100
# TYPE scoreline_result_latency_seconds histogram
scoreline_result_latency_seconds_bucket{role="worker",objective="title-ranking",model="title-ranking@v1",le="0.01"} 50
scoreline_result_latency_seconds_bucket{role="worker",objective="title-ranking",model="title-ranking@v1",le="0.1"} 300
scoreline_result_latency_seconds_bucket{role="worker",objective="title-ranking",model="title-ranking@v1",le="+Inf"} 300
scoreline_result_latency_seconds_count{role="worker",objective="title-ranking",model="title-ranking@v1"} 300
scoreline_result_latency_seconds_sum{role="worker",objective="title-ranking",model="title-ranking@v1"} 12
# TYPE scoreline_requests_routed_total counter
scoreline_requests_routed_total{objective="title-ranking",model="title-ranking@v1",cell="",traffic="live"} 280
scoreline_requests_routed_total{objective="title-ranking",model="title-ranking@v3",cell="canary",traffic="live"} 20
# TYPE scoreline_dead_letters_total counter
scoreline_dead_letters_total{role="router",code="malformed_json"} 5
# TYPE scoreline_consumer_lag_records gauge
scoreline_consumer_lag_records{group="scoreline.worker.s1",topic="scoreline.shard.s1",partition="1"} 12
scoreline_consumer_lag_records{group="scoreline.worker.s1",topic="scoreline.shard.s1",partition="0"} 3
# TYPE scoreline_rules_version gauge
scoreline_rules_version 7
"""


def _view(before: str | None = BEFORE, after: str = AFTER, dt: float = 2.0) -> top_view.View:
    first = top_view.parse(before, source="a", at=10.0) if before is not None else None
    return top_view.summarise(first, top_view.parse(after, source="a", at=10.0 + dt))


def test_rates_errors_and_quantiles_cover_only_the_interval():
    view = _view()
    assert view.interval == 2.0
    v1 = next(r for r in view.models if r.model == "title-ranking@v1")
    assert v1.window == 200 and v1.rps == 100.0 and v1.errors == 10 and v1.total == 300
    # 200 new observations all landed in (0.01, 0.1]: p50 interpolates to the bucket's middle.
    assert v1.p50_ms == pytest.approx(55.0)
    assert v1.p99_ms == pytest.approx(99.1)
    v3 = next(r for r in view.models if r.model == "title-ranking@v3")
    assert v3.window == 100 and v3.p99_ms is None  # no latency buckets for it


def test_routing_shares_dead_letters_lag_and_rules_version():
    view = _view()
    shares = {(model, cell): share for _, model, cell, _, share, _ in view.routed}
    assert shares == {("title-ranking@v1", ""): pytest.approx(0.9), ("title-ranking@v3", "canary"): pytest.approx(0.1)}
    assert view.dead_letters == {"malformed_json": (5, 2.0)}
    assert view.lag == {"scoreline.shard.s1": {0: 3, 1: 12}}
    assert view.rules_versions == {7: 1}


def test_a_counter_reset_counts_as_the_new_value():
    restarted = AFTER.replace('status="ok"} 290', 'status="ok"} 40')
    v1 = next(r for r in _view(after=restarted).models if r.model == "title-ranking@v1")
    assert v1.window == 40 + 10


def test_one_scrape_gives_totals_without_rates():
    view = _view(before=None)
    assert view.interval is None
    assert all(r.rps is None for r in view.models)
    assert "totals since start" in top_view.render(view)


def test_merged_endpoints_add_up_and_mixed_rules_versions_are_flagged():
    a = top_view.parse(AFTER, source="a", at=1.0)
    b = top_view.parse(AFTER.replace("scoreline_rules_version 7", "scoreline_rules_version 8"), source="b", at=1.0)
    view = top_view.summarise(None, top_view.merge([a, b]))
    assert view.sources == 2
    assert next(r for r in view.models if r.model == "title-ranking@v1").total == 600
    assert view.rules_versions == {7: 1, 8: 1}
    assert "MIXED" in top_view.render(view)


def test_quantile_interpolates_like_prometheus():
    assert top_view.quantile(0.5, {1.0: 10, 2.0: 20, float("inf"): 20}) == pytest.approx(1.0)
    assert top_view.quantile(0.75, {1.0: 10, 2.0: 20, float("inf"): 20}) == pytest.approx(1.5)
    assert top_view.quantile(0.99, {1.0: 0, float("inf"): 10}) == 1.0
    assert top_view.quantile(0.5, {}) is None
    assert top_view.quantile(0.5, {1.0: 0, float("inf"): 0}) is None


def test_agreement_per_model_pair():
    rows = [
        {"objective": "title-ranking", "primary_model": "v1", "shadow_model": "v2", "matched": True,
         "agreement": {"kind": "ranking", "top1_agrees": True, "top_k_overlap": 1.0}},
        {"objective": "title-ranking", "primary_model": "v1", "shadow_model": "v2", "matched": True,
         "agreement": {"kind": "ranking", "top1_agrees": False, "top_k_overlap": 0.5}},
        {"objective": "title-ranking", "primary_model": "v1", "shadow_model": "v2", "matched": False,
         "reason": "timed_out", "agreement": {}},
        {"objective": "fraud-score", "primary_model": "f1", "shadow_model": "f2", "matched": True,
         "agreement": {"kind": "probability", "primary_band": "low", "shadow_band": "low", "abs_diff": 0.02}},
    ]
    result = top_view.agreement(rows)
    ranking = result[("title-ranking", "v1", "v2")]
    assert ranking["n"] == 3 and ranking["matched"] == 2
    assert ranking["agree"] == 0.5 and ranking["overlap"] == 0.75
    fraud = result[("fraud-score", "f1", "f2")]
    assert fraud["agree"] == 1.0 and fraud["abs_diff"] == pytest.approx(0.02)
    frame = top_view.render(_view(), result)
    assert "v1 → v2" in frame and "50.0%" in frame


def test_render_shows_every_section_and_na_without_comparisons():
    frame = top_view.render(_view())
    for heading in ("ROLE", "ROUTED", "DEAD LETTERS", "LAG", "SHADOW AGREEMENT  n/a"):
        assert heading in frame
    assert "p0=3 p1=12" in frame


def test_endpoint_url():
    assert endpoint_url("w1:9464") == "http://w1:9464/metrics"
    assert endpoint_url("http://x:1/metrics") == "http://x:1/metrics"


def test_a_rollout_in_progress_shows_its_step_samples_and_verdicts():
    rollout = {"objective": "title-ranking", "candidate": "title-ranking@v2", "state": "running", "percent": 25.0,
               "step": 1, "reason": "", "steps": [
                   {"percent": 5, "decision": "advance"},
                   {"percent": 25, "evidence": {"candidate": {"results": 412}, "incumbent": {"results": 1236}},
                    "judgements": [{"guard": "error_rate", "verdict": "pass"},
                                   {"guard": "latency_p99", "verdict": "wait"}]},
                   {"percent": 100}]}
    paused = rollout | {"objective": "fraud-score", "state": "paused", "reason": "rules version 9 changed it"}
    frame = top_view.render(_view(), rollouts=[rollout, paused])
    line = next(x for x in frame.splitlines() if "title-ranking@v2" in x and "running" in x)
    assert "25%" in line and "2/3" in line and "412" in line and "1236" in line
    assert "error_rate=pass latency_p99=wait" in line
    assert "paused: rules version 9 changed it" in frame
    assert "ROLLOUT" not in top_view.render(_view())


def test_the_scoring_section_shows_each_models_queue_waits_call_costs_and_busy_threads():
    def scrape(calls: int, cost: int, waits: tuple[int, int, int], busy: float, timeouts: int, queued: int):
        labels = 'role="worker",model="ranker-gbdt@v1"'
        text = f"""\
# TYPE scoreline_scoring_queue_requests gauge
scoreline_scoring_queue_requests{{{labels}}} {queued}
# TYPE scoreline_scoring_calls_in_flight gauge
scoreline_scoring_calls_in_flight{{{labels}}} 1
# TYPE scoreline_scoring_queue_wait_seconds histogram
scoreline_scoring_queue_wait_seconds_bucket{{{labels},le="0.001"}} {waits[0]}
scoreline_scoring_queue_wait_seconds_bucket{{{labels},le="0.01"}} {waits[1]}
scoreline_scoring_queue_wait_seconds_bucket{{{labels},le="+Inf"}} {waits[2]}
scoreline_scoring_queue_wait_seconds_count{{{labels}}} {waits[2]}
scoreline_scoring_queue_wait_seconds_sum{{{labels}}} 0
# TYPE scoreline_scoring_batch_cost histogram
scoreline_scoring_batch_cost_bucket{{{labels},le="+Inf"}} {calls}
scoreline_scoring_batch_cost_count{{{labels}}} {calls}
scoreline_scoring_batch_cost_sum{{{labels}}} {cost}
# TYPE scoreline_workflow_timeouts_total counter
scoreline_workflow_timeouts_total{{{labels}}} {timeouts}
# TYPE scoreline_scoring_threads gauge
scoreline_scoring_threads{{executor="scoreline-scoring"}} 2
# TYPE scoreline_scoring_busy_seconds_total counter
scoreline_scoring_busy_seconds_total{{executor="scoreline-scoring"}} {busy}
"""
        return text

    before = top_view.parse(scrape(10, 1000, (10, 10, 10), 1.0, 0, 0), source="w", at=0.0)
    after = top_view.parse(scrape(110, 21000, (60, 110, 110), 11.0, 3, 7), source="w", at=10.0)
    view = top_view.summarise(before, after)
    (row,) = view.scoring
    assert (row.role, row.model, row.queued, row.in_flight, row.timeouts) == ("worker", "ranker-gbdt@v1", 7, 1, 3)
    assert row.calls_per_s == pytest.approx(10.0) and row.mean_cost == pytest.approx(200.0)
    assert row.wait_p50_ms == pytest.approx(1.0) and 1.0 < row.wait_p99_ms <= 10.0
    assert view.threads == {"w scoreline-scoring": (2, pytest.approx(0.5))}  # 10 s busy of 2 threads x 10 s
    text = top_view.render(view)
    assert "SCORING" in text and "ranker-gbdt@v1" in text and "busy 50%" in text


def test_the_loop_section_shows_each_processs_event_loops_lateness():
    def scrape(source: str, loops: dict[str, tuple[int, int, int, float]], at: float) -> top_view.Scrape:
        lines = ["# TYPE scoreline_event_loop_lag_seconds histogram",
                 "# TYPE scoreline_event_loop_lag_max_seconds gauge"]
        for loop, (under_1ms, under_10ms, total, worst) in loops.items():
            lines += [f'scoreline_event_loop_lag_seconds_bucket{{loop="{loop}",le="0.001"}} {under_1ms}',
                      f'scoreline_event_loop_lag_seconds_bucket{{loop="{loop}",le="0.01"}} {under_10ms}',
                      f'scoreline_event_loop_lag_seconds_bucket{{loop="{loop}",le="+Inf"}} {total}',
                      f'scoreline_event_loop_lag_seconds_count{{loop="{loop}"}} {total}',
                      f'scoreline_event_loop_lag_seconds_sum{{loop="{loop}"}} 0',
                      f'scoreline_event_loop_lag_max_seconds{{loop="{loop}"}} {worst}']
        return top_view.parse("\n".join(lines) + "\n", source=source, at=at)

    before = top_view.merge([scrape("router:9464", {"live": (100, 100, 100, 0.0005)}, 0.0),
                             scrape("run:9464", {"live": (100, 100, 100, 0.0005), "side": (0, 100, 100, 0.004)}, 0.0)])
    # In 10 s: the router's loop always on time; the all-roles process's side loop late by 10 ms and more.
    after = top_view.merge([scrape("router:9464", {"live": (300, 300, 300, 0.0005)}, 10.0),
                            scrape("run:9464", {"live": (300, 300, 300, 0.0008), "side": (0, 100, 300, 0.250)}, 10.0)])
    view = top_view.summarise(before, after)

    assert [(source, loop) for source, loop, *_ in view.loops] == [("router:9464", "live"), ("run:9464", "live"),
                                                                   ("run:9464", "side")]
    by = {(source, loop): figures for source, loop, *figures in view.loops}
    assert by[("router:9464", "live")][1] <= 1.0 and by[("run:9464", "side")][0] >= 10.0  # p99, then p50
    assert by[("run:9464", "side")][2] == pytest.approx(250.0)  # the worst since start, in ms
    frame = top_view.render(view)
    assert "LOOP" in frame and "side" in frame and "250.0" in frame
    assert "(no process reports its event loop)" in top_view.render(_view())
