"""``scoreline models`` and ``scoreline lineage`` through the real parser (the repository commands on a broker)."""

from __future__ import annotations

import json

import pytest

from scoreline.cli import main
from scoreline.settings import EXAMPLES_DIR


def run_json(capsys, *argv: str):
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_models_list_json(capsys) -> None:
    rows = run_json(capsys, "models", "list", "--json")
    assert [f"{r['name']}@{r['version']}" for r in rows] == [
        "churn-risk@v1", "churn-risk@v2", "fraud-score@v1", "fraud-score@v2", "title-ranking@v1", "title-ranking@v2"]
    keys = {"name", "version", "objective", "shard", "metrics", "baseline_metrics", "source"}
    assert all(set(r) == keys and r["source"] == "local" for r in rows)
    by_id = {f"{r['name']}@{r['version']}": r for r in rows}
    assert by_id["title-ranking@v2"]["shard"] == "s2"
    assert by_id["fraud-score@v1"]["metrics"]["auc"] > by_id["fraud-score@v1"]["baseline_metrics"]["auc"]


def test_models_list_shows_null_for_a_model_on_no_shard(capsys) -> None:
    rows = run_json(capsys, "models", "list", "--json", "--rules", str(EXAMPLES_DIR / "rules-shadow-all.json"))
    assert {r["name"] + "@" + r["version"]: r["shard"] for r in rows}["fraud-score@v1"] is None


def test_models_list_text_is_a_table(capsys) -> None:
    assert main(["models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["model", "objective", "shard"]
    assert any(line.startswith("title-ranking@v1") and " s1 " in line for line in lines)


def test_models_describe_json(capsys) -> None:
    doc = run_json(capsys, "models", "describe", "fraud-score@v2", "--json")
    assert (doc["id"], doc["shard"], doc["workflow"]) == ("fraud-score@v2", "s1", "fraud_score")
    assert set(doc["facts"]) == {"user_profile", "user_txn_history"}
    assert doc["facts"]["user_profile"]["topic"] == "scoreline.facts.user_profile"
    assert doc["used_by"] == [{"objective": "fraud-score", "role": "shadow 100%",
                               "path": "objectives.fraud-score.shadow[0].model"}]
    assert doc["package"]["valid"] and doc["manifest"]["name"] == "fraud-score"
    from workflows.registry import ModelRegistry, model_bytes

    loaded = model_bytes(ModelRegistry.default().get("fraud-score@v2"))
    assert doc["memory"] == {"declared": loaded, "measured": loaded, "problem": None} and loaded > 0
    assert doc["source"] == "local"


def test_models_describe_text_and_unknown(capsys) -> None:
    assert main(["models", "describe", "title-ranking@v1"]) == 0
    out = capsys.readouterr().out
    assert "used by" in out and "objectives.title-ranking.default" in out
    assert main(["models", "describe", "nope@v9"]) == 2
    assert "[model_unavailable]" in capsys.readouterr().err


def test_lineage_json_and_tree(capsys) -> None:
    doc = run_json(capsys, "lineage", "--json", "--prefix", "acme.")
    assert doc["facts"]["user_embedding"]["topic"] == "acme.facts.user_embedding"
    assert doc["facts"]["user_embedding"]["file"].endswith("user_embedding.npz")
    assert main(["lineage"]) == 0
    assert capsys.readouterr().out.startswith("lineage (rules version 1)\n├── objective title-ranking")


@pytest.mark.parametrize(("target", "objectives"), [("fact:user_txn_history", ["fraud-score"]),
                                                    ("model:title-ranking@v2", ["title-ranking"])])
def test_lineage_impact(capsys, target, objectives) -> None:
    assert run_json(capsys, "lineage", "--impact", target, "--json")["objectives"] == objectives


def test_lineage_impact_rejects_unknown_targets(capsys) -> None:
    assert main(["lineage", "--impact", "fact:nope"]) == 2
    assert "[invalid_value]" in capsys.readouterr().err


# ---------------------------------------------------------------- new, validate, init, configuration


def test_models_new_writes_a_skeleton_that_validates(tmp_path, capsys) -> None:
    doc = run_json(capsys, "models", "new", "churn@v1", "--objective", "churn", "--dir", str(tmp_path), "--json")
    assert doc["files"] == ["examples.json", "manifest.json", "workflow.py"]
    report = run_json(capsys, "models", "validate", str(tmp_path / "churn@v1"), "--json")
    assert report["valid"] and report["outcomes"] == {"ok": 3} and report["us_per_request"] > 0
    assert report["sha256"] and report["id"] == "churn@v1"


def test_models_validate_names_the_fault_and_exits_1(tmp_path, capsys) -> None:
    assert main(["models", "new", "churn@v1", "--objective", "churn", "--dir", str(tmp_path)]) == 0
    (tmp_path / "churn@v1" / "workflow.py").write_text("import torch_that_is_not_here\n")
    capsys.readouterr()
    assert main(["models", "validate", str(tmp_path / "churn@v1")]) == 1
    out = capsys.readouterr().out
    assert "churn@v1: INVALID [model_unavailable]" in out and "No module named 'torch_that_is_not_here'" in out


def test_models_new_refuses_an_existing_package_in_one_line(tmp_path, capsys) -> None:
    assert main(["models", "new", "churn@v1", "--objective", "churn", "--dir", str(tmp_path)]) == 0
    assert main(["models", "new", "churn@v1", "--objective", "churn", "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "[invalid_config]" in err[0] and "exists already" in err[0]


def test_init_writes_a_project_whose_rules_and_package_validate(tmp_path, capsys) -> None:
    doc = run_json(capsys, "init", str(tmp_path / "p"), "--objective", "churn", "--client", "app", "--json")
    assert doc["run"].startswith("scoreline run --rules")
    assert run_json(capsys, "rules", "validate", doc["rules"], "--json")["objectives"] == ["churn"]
    assert run_json(capsys, "models", "validate", doc["model"], "--json")["valid"]
    rows = run_json(capsys, "models", "list", "--json", "--rules", doc["rules"], "--models-dir",
                    str(tmp_path / "p" / "models"))
    assert [(r["name"], r["shard"]) for r in rows] == [("churn", "s1")]


@pytest.mark.parametrize("argv", [
    ["models", "list", "--models-dir", "/no/such/models"],
    ["lineage", "--facts-dir", "/no/such/facts"],
    ["run", "--rules", "/no/such/rules.json"],
    ["send", "--objective", "churn", "--rules", "/no/such/rules.json"],
])
def test_a_missing_configuration_path_is_one_line_naming_it(argv, capsys, monkeypatch) -> None:
    monkeypatch.setenv("SCORELINE_BOOTSTRAP", "127.0.0.1:1")  # a closed port: the configuration fails first
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "[invalid_config]" in err[0] and "/no/such/" in err[0], err


@pytest.mark.kafka
def test_the_repository_commands_publish_list_describe_pull_and_retire(capsys, kafka_bootstrap, prefix, tmp_path):
    connect = ("--bootstrap", kafka_bootstrap, "--prefix", prefix)
    assert main(["models", "new", "echo@v1", "--objective", "echo", "--dir", str(tmp_path / "src")]) == 0
    capsys.readouterr()
    package = str(tmp_path / "src" / "echo@v1")
    published = run_json(capsys, "models", "publish", package, *connect, "--json")
    assert published["created"] and published["topic"] == f"{prefix}models" and published["chunks"] == 1
    assert run_json(capsys, "models", "publish", package, *connect, "--json")["created"] is False  # a no-op

    rows = run_json(capsys, "models", "list", "--published", "--bootstrap", kafka_bootstrap, "--prefix", prefix,
                    "--json")
    assert [r["source"] for r in rows if r["name"] == "echo"] == [f"{prefix}models"]
    doc = run_json(capsys, "models", "describe", "echo@v1", "--published", "--bootstrap", kafka_bootstrap,
                   "--prefix", prefix, "--json")
    assert doc["source"] == f"{prefix}models" and doc["package"]["sha256"] == published["sha256"]
    assert doc["objective"] == "echo" and doc["memory"]["declared"] == 0  # the skeleton has no arrays

    pulled = run_json(capsys, "models", "pull", "echo@v1", *connect, "--dir", str(tmp_path / "out"), "--json")
    assert pulled["sha256"] == published["sha256"] and (tmp_path / "out" / "echo@v1" / "manifest.json").is_file()

    with open(tmp_path / "src" / "echo@v1" / "workflow.py", "a") as f:
        f.write("\n# changed\n")
    assert main(["models", "publish", package, *connect]) == 2
    assert "[model_conflict]" in capsys.readouterr().err

    assert run_json(capsys, "models", "retire", "echo@v1", *connect, "--json")["retired"] is True
    assert main(["models", "describe", "echo@v1", "--published", "--bootstrap", kafka_bootstrap,
                 "--prefix", prefix]) == 2
    assert "[model_unavailable]" in capsys.readouterr().err
