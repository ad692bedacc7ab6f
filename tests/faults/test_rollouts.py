"""Guarded rollouts end to end on a real broker: promoted, rolled back on errors and on latency, resumed after a
``kill -9`` of the controller, paused by a hand-published rules version; no request lost in any."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest
from rollout_scenarios import (
    CANDIDATE,
    INCUMBENT,
    RolloutOutcome,
    controller_paused_past_its_session,
    failing_third,
    hand_published_rules,
    healthy_with_controller_killed,
    publish_raced_by_hand,
    shadow_gate,
    three_times_slower,
)

from streams.rollouts.records import RolloutRefused

pytestmark = pytest.mark.kafka


def _delivered(outcome: RolloutOutcome) -> None:
    tally = outcome.tally
    assert tally.requests > 0 and tally.lost == 0, tally
    assert tally.inconsistent == 0, tally
    assert outcome.unversioned == 0  # every result names the rules version that routed it
    published = {s["rules_version"] for s in outcome.steps if s["rules_version"] is not None}
    assert published <= set(outcome.versions_seen), (published, outcome.versions_seen)


async def test_a_healthy_candidate_is_promoted_and_survives_its_controller_killed(env):
    outcome = await healthy_with_controller_killed(env)
    assert outcome.state == "promoted", outcome.reason
    assert [s["percent"] for s in outcome.steps] == [10, 50, 100]  # it starts at the canary's 10 %, never 5 %
    assert [s["decision"] for s in outcome.steps] == ["advance", "advance", "promoted"]
    versions = [s["rules_version"] for s in outcome.steps]
    assert versions == sorted(set(versions)), "a step was published twice or out of order"
    assert "killed" in outcome.tally.note and str(versions[1]) in outcome.tally.note  # killed mid-step, resumed
    assert all(s["candidate"] >= 80 for s in outcome.steps[:2])
    rules = env.rules  # the example: v1 the default, v2 the canary
    assert rules.objective("title-ranking").default == INCUMBENT
    final = outcome.rollout["final_rules_version"]
    assert final == versions[-1] and max(outcome.versions_seen) == final
    _delivered(outcome)


async def test_a_candidate_failing_a_third_of_its_requests_is_rolled_back_in_its_first_step(env):
    outcome = await failing_third(env)
    assert outcome.state == "rolled_back"
    first, *rest = outcome.steps
    assert first["decision"] == "roll_back" and first["failed"] == ["error_rate"]
    assert all(s["rules_version"] is None for s in rest)  # no second step was ever published
    assert "error_rate failed" in outcome.reason
    _delivered(outcome)
    assert outcome.tally.statuses.get("error", 0) > 0 and outcome.tally.dead_letters > 0


async def test_a_candidate_three_times_slower_is_rolled_back_on_latency(env):
    outcome = await three_times_slower(env)
    assert outcome.state == "rolled_back", outcome.reason
    assert outcome.steps[0]["failed"] == ["latency_p90"], outcome.steps
    assert "latency_p90 failed" in outcome.reason
    _delivered(outcome)


async def test_hand_published_rules_pause_a_rollout_and_a_second_start_is_refused(env):
    seen = await hand_published_rules(env)
    paused = seen["paused"]
    assert "scoreline_rollout_controller_active 1.0" in seen["metrics"]
    assert ('scoreline_rollout_percent{candidate="title-ranking@v2",objective="title-ranking",state="paused"} 20.0'
            in seen["metrics"])
    assert f"rules version {seen['hand_version']} changed title-ranking" in paused.reason
    assert isinstance(seen["second_start"], RolloutRefused) and "already has a rollout" in str(seen["second_start"])
    resumed = seen["resumed"]
    # The hand-made 35 % is kept: the step begins there rather than move users off the candidate.
    assert resumed.current.percent == 35 and resumed.current.rules_version > seen["hand_version"]
    aborted = seen["aborted"]
    assert aborted.state == "aborted" and aborted.reason == "aborted by test"
    assert aborted.current.decision == "abort" and aborted.current.ended_ms is not None
    assert seen["rules"].objective("title-ranking").canary is None  # every user back on the incumbent
    assert seen["rules"].version == aborted.final_rules_version
    status = subprocess.run([sys.executable, "-m", "scoreline", "rollout", "status", "--objective", "title-ranking",
                             "--bootstrap", env.kafka.bootstrap, "--prefix", env.layout.prefix, "--json"],
                            capture_output=True, timeout=60, check=True)
    doc = orjson.loads(status.stdout)
    assert (doc["state"], doc["percent"], doc["candidate"]) == ("aborted", 0.0, CANDIDATE)
    assert [s["percent"] for s in doc["steps"]] == [20, 35, 60, 100]
    refused = subprocess.run([sys.executable, "-m", "scoreline", "rollout", "pause", "--objective", "title-ranking",
                              "--bootstrap", env.kafka.bootstrap, "--prefix", env.layout.prefix],
                             capture_output=True, timeout=60)
    assert refused.returncode == 2 and b"[rollout_refused]: no rollout of title-ranking is running" in refused.stderr
    lineage = subprocess.run([sys.executable, "-m", "scoreline", "lineage", "--bootstrap", env.kafka.bootstrap,
                              "--prefix", env.layout.prefix, "--json"], capture_output=True, timeout=60, check=True)
    edges = orjson.loads(lineage.stdout)["edges"]
    step = f"evidence:{aborted.id}@20%"
    assert {"from": f"model:{CANDIDATE}", "to": step} in [{k: e[k] for k in ("from", "to")} for e in edges]
    assert {"from": step, "to": f"rules:v{seen['hand_version'] + 1}", "label": "pause"} in edges


async def test_a_publish_that_lands_between_the_controllers_read_and_write_is_never_overwritten(env, monkeypatch):
    seen = await publish_raced_by_hand(env, monkeypatch)
    paused = seen["paused"]
    assert "changed by hand while the step was being published" in paused.reason, paused.reason
    assert f"rules version {seen['hand_version']} is the latest" in paused.reason  # says which publish won
    assert seen["latest"].version == seen["hand_version"]  # the hand-made version is still the one in force
    assert seen["latest"].published_by == "someone by hand"
    assert paused.current.rules_version is None  # the step was never published


async def test_a_controller_stopped_past_its_session_and_resumed_never_overwrites_its_successor(env):
    seen = await controller_paused_past_its_session(env)
    assert seen["epoch_b"] > seen["epoch_a"] >= 1
    log = seen["log"]
    rollout = log.current["title-ranking"]
    assert (rollout.state, rollout.epoch) == ("paused", seen["epoch_b"])  # B's state, not A's late write
    assert any(f.startswith("title-ranking@") for f in log.fenced)  # A's write was read, and ignored
    assert seen["after"].reason == "paused by ops"


async def test_shadow_agreement_gates_a_candidate_before_any_live_traffic(env):
    seen = await shadow_gate(env)
    gated = seen["gated"]
    assert gated.state == "rolled_back" and "before any live traffic" in gated.reason
    assert "agreement:top_k_overlap failed" in gated.reason and "over 200 shadow comparisons" in gated.reason
    assert all(step.rules_version is None for step in gated.steps)  # no step was ever published
    assert seen["rules"].objective("title-ranking").canary is None  # and the example's 10 % canary is gone
    agreeing = seen["agreeing"]
    assert agreeing.state == "running" and agreeing.current.percent == 25  # beside the other rollout
    assert seen["rules"].objective("fraud-score").canary.model == "fraud-score@v2"


async def test_a_command_with_no_controller_running_stays_queued_and_says_so(env):
    import dataclasses

    from rollout_scenarios import spec

    from streams.rollouts.client import RolloutClient

    client = RolloutClient(env.kafka, env.layout)
    start = dataclasses.replace(spec(), guards=())
    command = await client.send("start", "title-ranking", start, by="test")
    applied, rollout = await client.wait_applied(command, timeout=1.0)
    assert (applied, rollout) == (False, None)
    assert command.id in (await client.read()).commands  # queued for whichever controller starts
    cli = subprocess.run([sys.executable, "-m", "scoreline", "rollout", "status", "--bootstrap", env.kafka.bootstrap,
                          "--prefix", env.layout.prefix, "--json"], capture_output=True, timeout=60, check=True)
    assert orjson.loads(cli.stdout)["rollouts"] == []
