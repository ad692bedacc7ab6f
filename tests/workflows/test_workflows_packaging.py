"""Package validation: every fault gives a clear model_unavailable error."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from workflows.errors import ModelPackageError, ModelUnavailable
from workflows.loading import validate_package
from workflows.packaging import DEFAULT_TIME_LIMIT_MS, load_manifest
from workflows.skeleton import new_package


def edit_manifest(package: Path, **changes) -> None:
    file = package / "manifest.json"
    doc = json.loads(file.read_text())
    for key, value in changes.items():
        if value is None:
            doc.pop(key)
        else:
            doc[key] = value
    file.write_text(json.dumps(doc))


def test_shipped_packages_are_valid(models_copy: Path) -> None:
    for package in sorted(models_copy.iterdir()):
        manifest = validate_package(package)
        assert manifest.id == package.name
        assert manifest.training["seed"] and manifest.training["generative_process"]


def test_missing_manifest(models_copy: Path) -> None:
    package = models_copy / "title-ranking@v1"
    (package / "manifest.json").unlink()
    with pytest.raises(ModelPackageError, match="manifest.json is missing") as err:
        validate_package(package)
    assert err.value.code == "model_unavailable"
    assert isinstance(err.value, ModelUnavailable)


def test_manifest_not_json(models_copy: Path) -> None:
    package = models_copy / "fraud-score@v1"
    (package / "manifest.json").write_text("{nope")
    with pytest.raises(ModelPackageError, match="not readable JSON"):
        load_manifest(package)


@pytest.mark.parametrize(("changes", "message"), [
    ({"version": 2}, "'version' must be str"),
    ({"objective": None}, "'objective' is missing"),
    ({"facts": "user_embedding"}, "'facts' must be list"),
    ({"metrics": {"ndcg_at_10": "high", "mrr": 0.5}}, "metrics.ndcg_at_10 must be a number"),
    ({"baseline_metrics": {"auc": 0.5}}, "must name the same metrics"),
    ({"training": {"seed": 1}}, "training.generative_process"),
    ({"version": "v9"}, "directory is 'title-ranking@v1'"),
    ({"workflow": "crystal_ball"}, "workflow 'crystal_ball' is unknown"),
    ({"facts": ["user_embedding"]}, "declares facts"),
    ({"weights": {"title_ids": {"shape": "big", "dtype": "<U5"}}}, "weights.title_ids.shape"),
])
def test_bad_manifest_fields(models_copy: Path, changes, message: str) -> None:
    package = models_copy / "title-ranking@v1"
    edit_manifest(package, **changes)
    with pytest.raises(ModelPackageError, match=message) as err:
        validate_package(package)
    assert str(package) in str(err.value)


def test_missing_weights(models_copy: Path) -> None:
    package = models_copy / "title-ranking@v2"
    (package / "weights.npz").unlink()
    with pytest.raises(ModelPackageError, match="weights.npz is missing"):
        validate_package(package)


def test_weight_shape_mismatch(models_copy: Path) -> None:
    package = models_copy / "fraud-score@v1"
    with np.load(package / "weights.npz") as data:
        arrays = dict(data)
    arrays["coef"] = arrays["coef"][:-1]
    np.savez(package / "weights.npz", **arrays)
    with pytest.raises(ModelPackageError, match=r"weight 'coef' has shape \[15\] but the manifest declares \[16\]"):
        validate_package(package)


def test_weight_missing_or_extra_array(models_copy: Path) -> None:
    package = models_copy / "fraud-score@v2"
    with np.load(package / "weights.npz") as data:
        arrays = dict(data)
    arrays.pop("out")
    arrays["stray"] = np.zeros(3)
    np.savez(package / "weights.npz", **arrays)
    with pytest.raises(ModelPackageError, match="lacks arrays the manifest declares: \\['out'\\]"):
        validate_package(package)


def test_weights_not_an_archive(models_copy: Path) -> None:
    package = models_copy / "fraud-score@v2"
    (package / "weights.npz").write_bytes(b"not a zip")
    with pytest.raises(ModelPackageError, match="not a readable npz"):
        validate_package(package)


def test_a_verified_reload_reads_the_same_arrays_straight_into_place(tmp_path) -> None:
    from workflows.packaging import _read_stored, load_weights, weight_specs
    from workflows.registry import default_models_dir

    for package in sorted(default_models_dir().iterdir()):
        manifest = load_manifest(package)
        slow, fast = load_weights(package, manifest), load_weights(package, manifest, verified=True)
        assert slow.keys() == fast.keys()
        assert all(np.array_equal(slow[k], fast[k]) and slow[k].dtype == fast[k].dtype for k in slow)
    arrays = {"c": np.arange(12.0).reshape(3, 4), "f": np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3)),
              "s": np.array(["x", "yy"]), "scalar": np.float32(3.5), "empty": np.zeros((0, 3))}
    np.savez(tmp_path / "w.npz", **arrays)
    read = _read_stored(tmp_path / "w.npz")
    assert read is not None and read.keys() == arrays.keys() and read["f"].flags.f_contiguous
    assert all(np.array_equal(read[k], v) and read[k].dtype == np.asarray(v).dtype for k, v in arrays.items())
    assert weight_specs(read) == weight_specs({k: np.asarray(v) for k, v in arrays.items()})
    np.savez_compressed(tmp_path / "z.npz", **arrays)
    assert _read_stored(tmp_path / "z.npz") is None  # compressed: np.load reads it
    (tmp_path / "cut.npz").write_bytes((tmp_path / "w.npz").read_bytes()[:200] +
                                       (tmp_path / "w.npz").read_bytes()[-400:])
    with pytest.raises((EOFError, ValueError, OSError, zipfile.BadZipFile)):
        _read_stored(tmp_path / "cut.npz")


def test_the_serving_time_limit_defaults_and_is_checked(tmp_path):
    package = new_package(tmp_path, "m@v1", "o")
    assert load_manifest(package).serving.time_limit_ms == DEFAULT_TIME_LIMIT_MS
    doc = json.loads((package / "manifest.json").read_text())
    for serving, ok in (({"time_limit_ms": 250}, True), ({"time_limit_ms": 0}, False),
                        ({"time_limit_ms": "1s"}, False), ({"max_batch": 4}, False), ([], False),
                        ({"time_limit_ms": 250, "max_batch_cost": -1}, False),
                        ({"time_limit_ms": 250, "batch_cost": "candidates"}, False)):
        (package / "manifest.json").write_text(json.dumps({**doc, "serving": serving}))
        if ok:
            manifest = load_manifest(package)
            assert manifest.serving.time_limit_ms == 250
            assert manifest.to_dict()["serving"] == {"time_limit_ms": 250}
        else:
            with pytest.raises(ModelPackageError, match="serving"):
                load_manifest(package)
    batching = {"max_batch_cost": 2000, "max_queue_delay_us": 500, "batch_cost": "payload.candidates"}
    (package / "manifest.json").write_text(json.dumps({**doc, "serving": batching}))
    spec = load_manifest(package).serving
    assert (spec.max_batch_cost, spec.max_queue_delay_us, spec.time_limit_ms) == (2000, 500, DEFAULT_TIME_LIMIT_MS)
    assert spec.cost({"candidates": ["a", "b", "c"]}) == 3
    assert spec.cost({"candidates": "abc"}) == spec.cost({}) == spec.cost([]) == 1
    assert load_manifest(package).to_dict()["serving"] == batching
