"""Plug-in workflows: a package's own workflow.py, installed modules, entry points, and every way they break."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from workflows import Item, ModelRegistry
from workflows.errors import ModelPackageError, ModelUnavailable
from workflows.facts import InMemoryFactStore
from workflows.loading import ENTRY_POINT_GROUP, build_model, package_sha256, validate_package
from workflows.registry import default_models_dir
from workflows.skeleton import class_name_for, new_package

ITEMS = [Item({"user_id": "u-1"}, {"x": 0.0}), Item({"user_id": "u-2"}, {"x": "no"}),
         Item({"user_id": "u-3"}, {"x": 2})]


def scores(model) -> list:
    return [o.value["score"] if o.ok else o.error.code for o in model.score_batch(ITEMS)]


def manifest_of(package: Path) -> dict:
    return json.loads((package / "manifest.json").read_text())


def set_manifest(package: Path, **changes) -> None:
    (package / "manifest.json").write_text(json.dumps({**manifest_of(package), **changes}))


def write(package: Path, name: str, source: str) -> None:
    path = package / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))


def test_a_new_skeleton_validates_and_scores_its_examples_as_generated(tmp_path):
    package = new_package(tmp_path, "churn-risk@v1", "churn-risk")
    assert manifest_of(package)["workflow"] == "workflow:ChurnRisk"
    assert validate_package(package).id == "churn-risk@v1"
    model = build_model(package, InMemoryFactStore())
    assert scores(model) == [0.5, "invalid_payload", 0.880797]
    assert model.sha256 == package_sha256(package)


def test_two_packages_with_the_same_module_name_never_see_each_other(tmp_path):
    a = new_package(tmp_path, "echo@a", "echo")
    b = new_package(tmp_path, "echo@b", "echo")
    for package, offset in ((a, 10), (b, 20)):
        write(package, "workflow.py", (package / "workflow.py").read_text().replace(
            "outcomes[i] = Outcome({\"score\": round(score, 6)}, None)",
            f"outcomes[i] = Outcome({{\"score\": {offset}}}, None)"))
    model_a, model_b = build_model(a, InMemoryFactStore()), build_model(b, InMemoryFactStore())
    assert scores(model_a) == [10, "invalid_payload", 10]
    assert scores(model_b) == [20, "invalid_payload", 20]
    assert type(model_a.workflow).__module__ != type(model_b.workflow).__module__
    assert "workflow" not in __import__("sys").modules  # never imported by its bare name


def test_a_package_module_may_be_a_folder_with_relative_imports(tmp_path):
    package = new_package(tmp_path, "folder@v1", "folder")
    (package / "workflow.py").rename(package / "model_code.py")
    write(package, "scoring/__init__.py", "from .model import Folder\n")
    write(package, "scoring/model.py", (package / "model_code.py").read_text())
    (package / "model_code.py").unlink()
    set_manifest(package, workflow="scoring:Folder")
    assert scores(build_model(package, InMemoryFactStore())) == [0.5, "invalid_payload", 0.880797]


def test_an_installed_module_serves_when_the_package_has_no_such_file(models_copy):
    package = models_copy / "fraud-score@v1"
    set_manifest(package, workflow="workflows.fraud_score:FraudScore")
    assert validate_package(package).workflow == "workflows.fraud_score:FraudScore"


def test_an_installed_distribution_offers_a_workflow_through_the_entry_point_group(tmp_path, monkeypatch):
    site = tmp_path / "site"
    write(site, "acme_workflows.py", new_package(tmp_path / "src", "acme@v1", "acme").joinpath("workflow.py")
          .read_text())
    write(site, "acme_workflows-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: acme-workflows\nVersion: 1.0\n")
    write(site, "acme_workflows-1.0.dist-info/entry_points.txt",
          f"[{ENTRY_POINT_GROUP}]\nacme = acme_workflows:Acme\n")
    monkeypatch.syspath_prepend(str(site))
    package = new_package(tmp_path / "models", "acme@v1", "acme")
    (package / "workflow.py").unlink()
    set_manifest(package, workflow="acme")
    assert scores(build_model(package, InMemoryFactStore())) == [0.5, "invalid_payload", 0.880797]


BROKEN = {
    "module missing": (None, "workflow:Nope", "neither in the package (workflow.py) nor installed"),
    "syntax error": ("def broken(:\n", None, "workflow.py raised on import: SyntaxError"),
    "raises on import": ("raise RuntimeError('no GPU here')\n", None,
                         "workflow.py raised on import: RuntimeError: no GPU here"),
    "exits on import": ("import sys\nsys.exit('no licence')\n", None, "raised on import: SystemExit: no licence"),
    "imports what is not installed": ("import no_such_dependency_xyz\n", None,
                                      "raised on import: ModuleNotFoundError: No module named 'no_such_dep"),
    "no such class": ("X = 1\n", None, "module 'workflow' has no 'Churn'"),
    "not a Workflow": ("class Churn:\n    pass\n", None, "is not a subclass of workflows.Workflow"),
    "fails to build": (None, None, "failed to build: ZeroDivisionError"),
    "load fails": (None, None, "failed to build: FileNotFoundError"),
    "bad spec": (None, "workflow:Churn:extra", "must be 'module:Class'"),
    "facts disagree": (None, None, "manifest declares facts ['user_profile'] but workflow"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_every_kind_of_broken_plug_in_is_model_unavailable_naming_the_package_and_the_cause(tmp_path, case):
    source, spec, message = BROKEN[case]
    package = new_package(tmp_path, "churn@v1", "churn")
    if source is not None:
        write(package, "workflow.py", source)
    if spec is not None:
        set_manifest(package, workflow=spec)
    if case == "module missing":
        (package / "workflow.py").unlink()
    if case == "fails to build":
        write(package, "workflow.py", (package / "workflow.py").read_text() + textwrap.dedent("""
            _Base = Churn
            class Churn(_Base):
                def __init__(self, weights, params):
                    super().__init__(weights, params)
                    1 / 0
            """))
    if case == "load fails":
        write(package, "workflow.py", (package / "workflow.py").read_text() + textwrap.dedent("""
            _Base = Churn
            class Churn(_Base):
                def load(self, package):
                    super().load(package)
                    (package.directory / "vocabulary.txt").read_text()
            """))
    if case == "facts disagree":
        set_manifest(package, facts=["user_profile"])
    with pytest.raises(ModelPackageError) as err:
        build_model(package, InMemoryFactStore())
    assert err.value.code == "model_unavailable"
    assert str(package) in str(err.value) and message in str(err.value), str(err.value)


def test_a_broken_plug_in_leaves_every_other_model_serving(tmp_path, facts):
    models = tmp_path / "models"
    shutil.copytree(default_models_dir(), models)
    good = new_package(models, "churn@v1", "churn")
    bad = new_package(models, "churn@v2", "churn")
    write(bad, "workflow.py", "raise ImportError('torch is not installed')\n")
    registry = ModelRegistry(models, facts)
    with pytest.raises(ModelUnavailable, match="churn@v2.*raised on import: ImportError: torch is not installed"):
        registry.get("churn@v2")
    assert scores(registry.get("churn@v1")) == [0.5, "invalid_payload", 0.880797]
    assert registry.get("title-ranking@v1").id == "title-ranking@v1"
    assert set(registry.problems()) == {"churn@v2"}
    assert good.name in registry.loaded()


def test_the_sha256_names_exactly_the_bytes_loaded(tmp_path):
    package = new_package(tmp_path, "churn@v1", "churn")
    first = package_sha256(package)
    build_model(package, InMemoryFactStore())  # leaves __pycache__ behind: not part of the package
    assert package_sha256(package) == first
    write(package, "workflow.py", (package / "workflow.py").read_text() + "\n# changed\n")
    assert package_sha256(package) != first


def test_weights_are_optional_but_a_declared_array_must_be_there(tmp_path):
    package = new_package(tmp_path, "churn@v1", "churn")
    assert not (package / "weights.npz").exists()
    validate_package(package)
    set_manifest(package, weights={"coef": {"shape": [2], "dtype": "float64"}})
    with pytest.raises(ModelPackageError, match="weights.npz is missing"):
        validate_package(package)


def test_skeleton_class_names_and_ids():
    assert class_name_for("churn-risk") == "ChurnRisk"
    assert class_name_for("3d-fit") == "Model3dFit"
    with pytest.raises(ValueError, match="NAME@VERSION"):
        new_package("/tmp", "no-version", "o")
