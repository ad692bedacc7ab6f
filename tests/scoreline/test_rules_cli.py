"""``scoreline rules``: validate / explain / simulate without a broker; publish / show / rollback with one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from routing import parse_rules
from scoreline.cli import main
from scoreline.settings import EXAMPLES_DIR

RULES = str(EXAMPLES_DIR / "rules.json")
ROOT = EXAMPLES_DIR.parent


def run_cli(capsys, *argv: str) -> tuple[int, dict | None, str]:
    """Run ``scoreline`` in-process; return the exit code, the JSON on stdout (if any) and stderr."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, orjson.loads(captured.out) if captured.out.strip() else None, captured.err


def run_subprocess(*argv: str) -> subprocess.CompletedProcess:
    """Run ``scoreline`` in a fresh process with no broker configured."""
    env = {k: v for k, v in os.environ.items() if k not in ("SCORELINE_BOOTSTRAP", "SCORELINE_RULES")}
    return subprocess.run([sys.executable, "-m", "scoreline", *argv], capture_output=True, env=env, cwd=ROOT,
                          timeout=120, check=False)


@pytest.fixture
def bad_rules(tmp_path: Path) -> str:
    doc = orjson.loads(Path(RULES).read_bytes())
    doc["objectives"]["title-ranking"]["canary"]["percent"] = 101
    doc["models"]["title-ranking@v2"]["shard"] = "s9"
    path = tmp_path / "bad.json"
    path.write_bytes(orjson.dumps(doc))
    return str(path)


# ---------------------------------------------------------------- no broker


def test_validate_accepts_the_shipped_rules(capsys):
    code, out, _ = run_cli(capsys, "rules", "validate", RULES, "--json")
    assert code == 0
    assert out["valid"] and out["problems"] == []
    assert out["objectives"] == ["title-ranking", "fraud-score", "churn-risk"]


def test_validate_names_every_problem_by_path_and_fails(capsys, bad_rules):
    code, out, err = run_cli(capsys, "rules", "validate", bad_rules, "--json")
    assert code == 1
    assert out["valid"] is False
    assert "objectives.title-ranking.canary.percent: 101 is outside 0..100" in out["problems"]
    assert "models.title-ranking@v2.shard: unknown shard 's9'" in out["problems"]
    assert "objectives.title-ranking.canary.percent" in err


def test_validate_of_a_missing_or_broken_file_fails(capsys, tmp_path):
    assert run_cli(capsys, "rules", "validate", str(tmp_path / "none.json"))[0] == 2
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    code, _, err = run_cli(capsys, "rules", "validate", str(broken))
    assert code == 1 and "not valid JSON" in err


def test_explain_is_deterministic_across_processes():
    argv = ("rules", "explain", "--objective", "title-ranking", "--context",
            '{"user_id": "u-123", "country": "US"}', "--rules", RULES, "--json")
    first, second = run_subprocess(*argv), run_subprocess(*argv)
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert first.stdout == second.stdout
    out = orjson.loads(first.stdout)
    assert out["decision"]["model"].startswith("title-ranking@")
    assert out["request"]["client"] == "demo" and out["rules_version"] == 1
    assert out["allocation"]["bucket"] == out["decision"]["bucket"]


def test_explain_reports_a_rejection_with_its_code(capsys):
    code, out, _ = run_cli(capsys, "rules", "explain", "--objective", "nope", "--context", "{}",
                           "--rules", RULES, "--json")
    assert code == 1
    assert out["error"]["code"] == "unknown_objective" and out["error"]["field"] == "objective"


def test_simulate_matches_the_expected_shares_within_a_point(capsys):
    code, out, _ = run_cli(capsys, "rules", "simulate", "--objective", "title-ranking", "--users", "100000",
                           "--rules", RULES, "--json")
    assert code == 0
    assert {"objective", "users", "rules_version", "models", "shadow"} <= out.keys()
    assert out["users"] == 100_000
    assert out["models"]["title-ranking@v2"]["expected"] == 0.2  # US: 10 % experiment cell 2 + 10 % canary
    for share in [*out["models"].values(), *out["shadow"].values()]:
        assert abs(share["observed"] - share["expected"]) <= 0.01


# ---------------------------------------------------------------- with a broker


@pytest.mark.kafka
def test_publish_show_rollback(capsys, kafka_bootstrap, prefix, bad_rules, tmp_path):
    connect = ("--bootstrap", kafka_bootstrap, "--prefix", prefix)
    code, out, _ = run_cli(capsys, "rules", "show", *connect, "--json")
    assert code == 0 and out["version"] is None and out["history"] == []  # nothing published: the example

    code, out, _ = run_cli(capsys, "rules", "publish", RULES, *connect, "--by", "alice", "--json")
    assert code == 0
    assert (out["version"], out["previous_version"], out["published_by"]) == (1, None, "alice")

    ramped = orjson.loads(Path(RULES).read_bytes())
    ramped["objectives"]["title-ranking"]["canary"]["percent"] = 30
    ramped_file = tmp_path / "ramped.json"
    ramped_file.write_bytes(orjson.dumps(ramped))
    code, out, _ = run_cli(capsys, "rules", "publish", str(ramped_file), *connect, "--if-version", "1", "--json")
    assert (code, out["version"], out["previous_version"]) == (0, 2, 1)
    # Based on version 1, which is no longer the latest: refused, nothing written.
    code, out, err = run_cli(capsys, "rules", "publish", RULES, *connect, "--if-version", "1", "--json")
    assert code == 2 and out is None and "[rules_conflict]" in err and "version 2 is the latest" in err

    code, out, err = run_cli(capsys, "rules", "publish", bad_rules, *connect, "--json")
    assert code == 2 and out is None and "invalid_rules" in err and "canary.percent" in err

    code, out, _ = run_cli(capsys, "rules", "show", *connect, "--json")
    assert (out["source"], out["version"], out["latest"]) == ("topic", 2, True)
    assert out["rules"]["objectives"]["title-ranking"]["canary"]["percent"] == 30
    assert [h["version"] for h in out["history"]] == [1, 2]

    code, out, _ = run_cli(capsys, "rules", "rollback", "--to", "1", *connect, "--json")
    assert (code, out["version"], out["rolled_back_to"], out["previous_version"]) == (0, 3, 1, 2)
    code, out, _ = run_cli(capsys, "rules", "show", *connect, "--version", "3", "--json")
    assert out["rules"]["objectives"]["title-ranking"]["canary"]["percent"] == 10
    assert out["latest"] is True

    # explain / simulate follow the cluster's version unless --rules says otherwise.
    code, out, _ = run_cli(capsys, "rules", "simulate", "--objective", "title-ranking", "--users", "1000",
                           *connect, "--json")
    assert out["rules_version"] == 3
    code, out, _ = run_cli(capsys, "rules", "explain", "--objective", "title-ranking", "--context",
                           '{"user_id": "u-1"}', *connect, "--json")
    assert out["rules_version"] == 3

    code, _, err = run_cli(capsys, "rules", "show", *connect, "--version", "9", "--json")
    assert code == 2 and "unknown_rules_version" in err


@pytest.mark.kafka
def test_placement_plan_prints_the_diff_and_apply_publishes_it_as_a_new_version(capsys, kafka_bootstrap, prefix,
                                                                                tmp_path):
    connect = ("--bootstrap", kafka_bootstrap, "--prefix", prefix)
    doc = orjson.loads(Path(RULES).read_bytes())
    for spec in doc["models"].values():
        spec["shard"] = "s1"  # everything on one shard
    crowded = tmp_path / "crowded.json"
    crowded.write_bytes(orjson.dumps(doc))

    code, plan, _ = run_cli(capsys, "placement", "plan", *connect, "--rules", str(crowded), "--json")
    assert code == 0 and plan["applied"] is None
    assert plan["rules_from"] == "rules file (nothing published yet)" and plan["traffic_from"] == "rules allocation"
    assert plan["before"]["s2"]["models"] == 0 and plan["after"]["s2"]["models"] > 0
    assert plan["imbalance"]["after"] < plan["imbalance"]["before"]
    assert all(m["from"].startswith("declared") for m in plan["memory_bytes"].values())
    assert plan["memory_bytes"]["title-ranking@v1"]["bytes"] > 0

    code, applied, _ = run_cli(capsys, "placement", "plan", *connect, "--rules", str(crowded), "--apply", "--json")
    assert code == 0 and applied["applied"]["version"] == 1 and applied["moves"] == plan["moves"]
    code, shown, _ = run_cli(capsys, "rules", "show", *connect, "--json")
    published = shown["rules"]
    assert {m: published["models"][m]["shard"] for m in plan["moves"]} == {m: v["to"] for m, v in plan["moves"].items()}
    assert parse_rules(published).objectives == parse_rules(doc).objectives  # only the placement changed

    code, again, _ = run_cli(capsys, "placement", "plan", *connect, "--json")  # from the topic now
    assert code == 0 and again["rules_version"] == 1 and again["moves"] == {}
    assert main(["placement", "plan", *connect]) == 0
    assert "no model moves: the placement is balanced within the tolerance" in capsys.readouterr().out

    # What a forecast needs, split as the placement splits the traffic.
    code, sized, _ = run_cli(capsys, "placement", "plan", *connect, "--forecast", "4000", "--worker-rps", "500",
                             "--json")
    capacity = sized["capacity"]
    assert code == 0 and capacity["router"]["replicas"] == 2  # 4000 / (3000 x 0.7)
    assert sum(c["rps"] for c in capacity["shards"].values()) == pytest.approx(4000, abs=1)
    assert all(c["partitions"] >= c["replicas"] and c["lag_threshold"] == 1000 for c in capacity["shards"].values())


@pytest.mark.kafka
def test_send_says_why_the_router_refused_a_request_instead_of_only_timing_out(capsys, kafka_bootstrap, prefix,
                                                                                 tmp_path):
    doc = orjson.loads(Path(RULES).read_bytes())
    doc["clients"]["demo"]["reply_topics"] = ["somewhere.else"]  # the client's own reply topic is not allowed
    rules = tmp_path / "rules.json"
    rules.write_bytes(orjson.dumps(doc))
    code = main(["send", "--bootstrap", kafka_bootstrap, "--prefix", prefix, "--rules", str(rules),
                 "--objective", "fraud-score", "--context", '{"user_id": "u-1"}', "--payload", '{"amount": 3}',
                 "--timeout", "3"])
    err = capsys.readouterr().err
    assert code == 1
    assert "was refused at the router [forbidden_reply_to]" in err and f"{prefix}replies.demo" in err, err
