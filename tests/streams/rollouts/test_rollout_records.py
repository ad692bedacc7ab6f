"""The rollouts topic's records and a step's evidence window (pure: no broker)."""

from __future__ import annotations

import orjson

from routing.rollout import Verdict
from streams.rollouts.evidence import Window, reply_topic_pattern
from streams.rollouts.records import (
    EPOCH_KEY,
    Command,
    Rollout,
    RolloutLog,
    RolloutSpec,
    State,
    Step,
    command_key,
    done_key,
    encode,
)

SPEC = RolloutSpec("title-ranking", "title-ranking@v2", (10.0, 50.0, 100.0), 60.0, 100, 5000,
                   ("error_rate<=0.01", "latency_p99<=1.5"))


def _rollout(state: str = State.RUNNING, rollout_id: str = "r1", started_ms: int = 1) -> Rollout:
    return Rollout(id=rollout_id, spec=SPEC, incumbent="title-ranking@v1", state=state,
                   steps=[Step(10.0, rules_version=4, started_ms=5), Step(50.0), Step(100.0)],
                   started_ms=started_ms)


def test_a_rollout_and_a_command_read_back_as_written():
    rollout = _rollout()
    rollout.current.judgements = [{"guard": "error_rate", "verdict": Verdict.PASS.value, "interval": [0.0, 0.01]}]
    again = Rollout.from_json(orjson.loads(encode(rollout)))
    assert again == rollout
    assert orjson.loads(encode(rollout))["percent"] == 10.0
    command = Command("c1", "start", "title-ranking", "me@host", 7, SPEC)
    assert Command.from_json(orjson.loads(encode(command))) == command


def test_the_percent_follows_the_published_steps_and_the_end():
    rollout = _rollout()
    assert rollout.percent == 10.0
    rollout.steps[0].rules_version = None
    assert rollout.percent == 0.0
    assert _rollout(State.PROMOTED).percent == 100.0
    assert _rollout(State.ROLLED_BACK).percent == 0.0


def test_the_log_keeps_commands_until_their_tombstone_and_finished_rollouts_for_history():
    log = RolloutLog()
    log.take(command_key("c1"), encode(Command("c1", "start", "title-ranking", "me", 1, SPEC)))
    log.take(command_key("c2"), encode(Command("c2", "pause", "title-ranking", "me", 2)))
    assert list(log.commands) == ["c1", "c2"]
    first = _rollout(State.ROLLED_BACK, "r1", started_ms=1)
    first.applied = ["c1"]
    log.take("title-ranking", encode(first))
    log.take(done_key("r1"), encode(first))
    log.take(command_key("c1"), None)
    assert list(log.commands) == ["c2"] and log.applied("c1") == first
    assert log.active("title-ranking") is None  # rolled back: a new start may come
    second = _rollout(State.RUNNING, "r2", started_ms=2)
    log.take("title-ranking", encode(second))
    assert log.active("title-ranking") == second
    assert [r.id for r in log.history()] == ["r1", "r2"] and log.history("fraud-score") == []
    log.take("broken", b"{not json")
    assert log.skipped and log.skipped[0].startswith("broken@")


def test_a_deposed_controllers_late_write_is_ignored_by_every_reader():
    """Fencing: a controller that becomes active writes an epoch one past any it read; a state record written
    under an older epoch afterwards (its predecessor, paused past its session and resumed) does not count."""
    log = RolloutLog()
    before = _rollout(State.RUNNING)  # written by the first controller, epoch 1
    before.epoch = 1
    log.take(EPOCH_KEY, b"1")
    log.take("title-ranking", encode(before), 10)
    log.take(EPOCH_KEY, b"2", 11)  # a second controller takes over
    paused = _rollout(State.PAUSED)
    paused.epoch, paused.reason = 2, "paused by ops"
    log.take("title-ranking", encode(paused), 12)
    late = _rollout(State.RUNNING)  # the first one resumes and writes what it still believes
    late.epoch, late.step = 1, 1
    log.take("title-ranking", encode(late), 13)
    log.take(done_key("r1"), encode(late), 14)
    assert log.current["title-ranking"] == paused and log.done == {}
    assert log.epoch == 2 and [f.split(":")[0] for f in log.fenced] == ["title-ranking@13", "done.r1@14"]
    legacy = RolloutLog()  # records from before epochs (0) still read as they were written
    legacy.take("title-ranking", encode(_rollout(State.RUNNING)))
    assert legacy.active("title-ranking") is not None


def _result(model: str, status: str = "ok", version: int = 4, total: float = 5.0, request_id: str | None = None,
            **fields) -> dict:
    return {"request_id": request_id or f"{model}-{status}-{version}-{total}-{len(fields)}",
            "objective": "title-ranking", "model": model, "status": status, "rules_version": version, "cell": None,
            "traffic": "live", "timings_ms": {"total": total}} | fields


def test_a_window_counts_the_steps_results_of_both_models_once():
    window = Window("title-ranking", "title-ranking@v2", "title-ranking@v1", since_version=4)
    for i in range(10):
        window.absorb_result(_result("title-ranking@v2", total=10.0 + i, request_id=f"c{i}"))
        window.absorb_result(_result("title-ranking@v1", total=5.0, request_id=f"i{i}"))
    window.absorb_result(_result("title-ranking@v2", "error", request_id="e1"))
    window.absorb_result(_result("title-ranking@v2", "expired", request_id="e2"))
    window.absorb_result(_result("title-ranking@v2", request_id="c1"))  # a replay: counted once
    for ignored in (_result("title-ranking@v2", version=3), _result("title-ranking@v2", cell="2"),
                    _result("title-ranking@v2", traffic="test"), _result("title-ranking@v2", objective="fraud-score"),
                    _result("title-ranking@v3"), _result("title-ranking@v2", version=None)):
        window.absorb_result(ignored)
    candidate, incumbent = window.candidate_arm, window.incumbent_arm
    assert (candidate.results, candidate.errors, len(candidate.latencies_ms)) == (12, 2, 10)
    assert (incumbent.results, incumbent.errors) == (10, 0)
    summary = window.summary()
    assert summary["candidate"]["error_rate"] == round(2 / 12, 4) and summary["incumbent"]["p50_ms"] == 5.0


def test_a_window_takes_the_candidates_matched_shadow_comparisons():
    window = Window("title-ranking", "title-ranking@v2", "title-ranking@v1", 0, {"top_k_overlap"})
    base = {"objective": "title-ranking", "shadow_model": "title-ranking@v2", "matched": True}
    window.absorb_comparison(base | {"request_id": "a", "agreement": {"top_k_overlap": 0.8}})
    window.absorb_comparison(base | {"request_id": "a", "agreement": {"top_k_overlap": 0.8}})
    window.absorb_comparison(base | {"request_id": "b", "matched": False, "agreement": {}})
    window.absorb_comparison(base | {"request_id": "c", "shadow_model": "title-ranking@v3",
                                     "agreement": {"top_k_overlap": 0.1}})
    assert window.agreement == {"top_k_overlap": [0.8]}


def test_the_reply_topics_read_are_the_prefixs_and_the_rules_clients():
    pattern = reply_topic_pattern("p.", ["p.replies.demo", "team.replies.home*", "exact.topic"])
    assert all(pattern.match(t) for t in ("p.replies.demo", "p.replies.other", "team.replies.home-7", "exact.topic"))
    assert not any(pattern.match(t) for t in ("p.requests", "exact.topic2", "team.replies.hom", "q.replies.demo"))
