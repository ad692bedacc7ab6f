"""ONNX as the trained component: the shipped churn-risk packages, and every way an ONNX model breaks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from workflows import Item
from workflows.errors import ModelPackageError, WorkflowError
from workflows.loading import build_model
from workflows.onnx import ONNX_THREADS_ENV, OnnxModel
from workflows.packaging import load_examples, load_manifest
from workflows.registry import default_models_dir
from workflows.training import churn_risk_workflow

PAYLOAD = {"tenure_months": 2, "monthly_spend": 9.5, "support_tickets_90d": 3, "plan": "basic", "autopay": False}


@pytest.fixture
def package(tmp_path: Path) -> Path:
    target = tmp_path / "churn-risk@v2"
    shutil.copytree(default_models_dir() / "churn-risk@v2", target)
    return target


def set_onnx(package: Path, **changes) -> None:
    file = package / "manifest.json"
    doc = json.loads(file.read_text())
    doc["onnx"] = {**doc["onnx"], **changes}
    file.write_text(json.dumps(doc))


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_the_shipped_onnx_packages_score_their_examples_in_one_run_per_batch(version, facts, monkeypatch):
    model = build_model(default_models_dir() / f"churn-risk@{version}", facts)
    runs = []
    real = OnnxModel.run
    monkeypatch.setattr(OnnxModel, "run", lambda self, inputs: runs.append(len(inputs)) or real(self, inputs))
    examples = load_examples(default_models_dir() / f"churn-risk@{version}")
    items = [Item(e["context"], e["payload"]) for e in examples] * 20
    outcomes = model.score_batch(items)
    assert runs == [len(items)]  # the whole batch in one session run
    assert all(o.ok and 0 <= o.value["probability"] <= 1 and o.value["band"] in ("low", "watch", "act")
               for o in outcomes)


def test_a_riskier_subscriber_scores_higher_and_bad_payloads_name_the_field(facts):
    model = build_model(default_models_dir() / "churn-risk@v2", facts)
    safe = {**PAYLOAD, "tenure_months": 48, "support_tickets_90d": 0, "plan": "premium", "autopay": True}
    risky, calm, bad, unknown = model.score_batch([
        Item({"user_id": "u-1"}, PAYLOAD), Item({"user_id": "u-1"}, safe),
        Item({"user_id": "u-1"}, {**PAYLOAD, "plan": "gold"}), Item({"user_id": "nobody"}, PAYLOAD)])
    assert risky.value["probability"] > calm.value["probability"]
    assert bad.error.code == "invalid_payload" and bad.error.field == "payload.plan"
    assert unknown.ok  # an unknown user has an all-zero profile, as the fact says


def test_a_corrupt_onnx_file_is_model_unavailable(package, facts):
    (package / "model.onnx").write_bytes(b"not a protobuf at all")
    with pytest.raises(ModelPackageError, match="model.onnx does not load") as err:
        build_model(package, facts)
    assert err.value.code == "model_unavailable" and str(package) in str(err.value)


def test_a_missing_onnx_file_is_model_unavailable(package, facts):
    (package / "model.onnx").unlink()
    with pytest.raises(ModelPackageError, match="model.onnx is missing"):
        build_model(package, facts)


@pytest.mark.parametrize(("changes", "message"), [
    ({"inputs": {"features": {"shape": [None, 17], "dtype": "float32"}}}, "declared with shape \\[None, 17\\]"),
    ({"inputs": {"features": {"shape": [None, 18], "dtype": "float64"}}}, "declared float64 but the model takes"),
    ({"inputs": {"x": {"shape": [None, 18], "dtype": "float32"}}}, "names \\['x'\\] but the model's are"),
    ({"outputs": {"scores": {"shape": [None, 2], "dtype": "float32"}}}, "'scores' is declared but the model has"),
    ({"file": "../elsewhere.onnx"}, "must be a path inside the package"),
    ({"inputs": {}}, "must name at least one tensor"),
])
def test_a_declaration_that_disagrees_with_the_model_is_model_unavailable(package, facts, changes, message):
    set_onnx(package, **changes)
    with pytest.raises(ModelPackageError, match=message):
        build_model(package, facts)


def test_inputs_that_do_not_match_the_declared_shapes_are_a_workflow_error(facts):
    model = build_model(default_models_dir() / "churn-risk@v1", facts)
    onnx = model.workflow.onnx
    with pytest.raises(WorkflowError, match=r"'features' has shape \[4, 5\], the model takes \[None, 18\]"):
        onnx.run(np.zeros((4, 5), dtype=np.float32))
    with pytest.raises(WorkflowError, match="is <U1, the model takes float32"):
        onnx.run(np.full((2, 18), "a"))
    assert onnx.run(np.zeros((3, 18), dtype=np.float64))["probabilities"].shape == (3, 2)  # cast, same kind


def test_a_workflow_feeding_the_wrong_shape_answers_workflow_error_for_its_batch(facts, monkeypatch):
    model = build_model(default_models_dir() / "churn-risk@v1", facts)
    monkeypatch.setattr(model.workflow, "features", lambda pre, facts: np.zeros((len(pre[1]), 7), np.float32))
    outcomes = model.score_batch([Item({"user_id": "u-1"}, PAYLOAD)] * 3)
    assert [o.error.code for o in outcomes] == ["workflow_error"] * 3
    assert "the model takes [None, 18]" in outcomes[0].error.message


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_each_shipped_package_carries_the_workflow_source_it_was_trained_with(version):
    shipped = (default_models_dir() / f"churn-risk@{version}" / "workflow.py").read_bytes()
    assert shipped == Path(churn_risk_workflow.__file__).read_bytes()


@pytest.mark.parametrize(("env", "threads"), [(None, 1), ("3", 3), ("0", 1), ("many", 1)])
def test_an_onnx_session_runs_one_intra_op_thread_unless_configured(monkeypatch, env, threads):
    """One thread per call by default (the scoring threads use the cores); ``SCORELINE_ONNX_THREADS`` to change it."""
    if env is None:
        monkeypatch.delenv(ONNX_THREADS_ENV, raising=False)
    else:
        monkeypatch.setenv(ONNX_THREADS_ENV, env)
    directory = default_models_dir() / "churn-risk@v1"
    model = OnnxModel(directory, load_manifest(directory).onnx)
    assert model.session.get_session_options().intra_op_num_threads == threads


def test_an_onnx_models_memory_is_its_sessions_not_its_files(monkeypatch, facts):
    """The budget counts what the session holds (resident memory grown while it was built), at least the file."""
    import workflows.onnx as onnx_module
    from workflows.memory import model_bytes

    # The process's RSS before and after each session is built: 50 MiB the first time, 200 MiB the second.
    grown = iter([100 * 2**20, 150 * 2**20, 100 * 2**20, 300 * 2**20])
    monkeypatch.setattr(onnx_module, "resident_bytes", lambda: next(grown))
    monkeypatch.setattr(onnx_module, "_MEASURED", {})  # as in a process that has not loaded it yet
    model = build_model(default_models_dir() / "churn-risk@v2", facts)
    onnx = model.workflow.onnx
    assert onnx.file_bytes == (default_models_dir() / "churn-risk@v2" / "model.onnx").stat().st_size
    assert onnx.memory_bytes == 50 * 2**20 and model_bytes(model) == 50 * 2**20  # no arrays besides
    # The same file again: its first figure stands (a budget's sums stay consistent across reloads).
    assert build_model(default_models_dir() / "churn-risk@v2", facts).workflow.onnx.memory_bytes == 50 * 2**20
    monkeypatch.setattr(onnx_module, "resident_bytes", lambda: 0)  # no growth seen: never less than the file
    monkeypatch.setattr(onnx_module, "_MEASURED", {})
    assert build_model(default_models_dir() / "churn-risk@v2", facts).workflow.onnx.memory_bytes == onnx.file_bytes
