"""The in-memory fact store: defaults, counting, upserts, files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from workflows.errors import UnknownFact
from workflows.facts import FactSpec, FactStore, InMemoryFactStore, write_fact_json, write_fact_npz


@pytest.fixture
def store() -> InMemoryFactStore:
    s = InMemoryFactStore()
    s.define("history", ["mean", "count"], [10.0, 0.0], key="user_id", description="test")
    s.put("history", ["u-1", "u-2"], [[1.0, 2.0], [3.0, 4.0]])
    return s


def test_lookup_aligns_rows_and_defaults_missing_keys(store: InMemoryFactStore) -> None:
    batch = store.lookup("history", ["u-2", "u-9", "u-1", "u-9"])
    np.testing.assert_array_equal(batch.values, [[3, 4], [10, 0], [1, 2], [10, 0]])
    np.testing.assert_array_equal(batch.found, [True, False, True, False])
    assert store.missing_counts() == {"history": 2}
    assert isinstance(store, FactStore)


def test_put_upserts_and_grows(store: InMemoryFactStore) -> None:
    store.put("history", ["u-2", "u-3"], np.array([[5.0, 6.0], [7.0, 8.0]]))
    store.put("history", [f"u-{i}" for i in range(10, 100)], np.ones((90, 2)))
    np.testing.assert_array_equal(store.lookup("history", ["u-1", "u-2", "u-3", "u-99"]).values,
                                  [[1, 2], [5, 6], [7, 8], [1, 1]])
    with pytest.raises(ValueError, match="shape"):
        store.put("history", ["u-1"], [[1.0, 2.0, 3.0]])


def test_lookup_results_do_not_alias_the_store(store: InMemoryFactStore) -> None:
    batch = store.lookup("history", ["u-1"])
    batch.values[:] = 99
    np.testing.assert_array_equal(store.lookup("history", ["u-1"]).values, [[1, 2]])


def test_empty_fact_and_empty_keys() -> None:
    s = InMemoryFactStore()
    s.define("f", ["a"], [0.5])
    assert s.lookup("f", []).values.shape == (0, 1)
    np.testing.assert_array_equal(s.lookup("f", ["x"]).values, [[0.5]])


def test_unknown_fact() -> None:
    with pytest.raises(UnknownFact, match="no fact named 'nope'") as err:
        InMemoryFactStore().lookup("nope", ["u-1"])
    assert err.value.code == "workflow_error"


def test_files_round_trip(tmp_path: Path) -> None:
    spec = FactSpec("emb", ("a", "b"), np.array([0.0, 1.0]), key="user_id", description="d")
    write_fact_npz(tmp_path, spec, ["u-1"], np.array([[2.0, 3.0]]))
    write_fact_json(tmp_path, FactSpec("avail", ("US",), np.zeros(1)), ["t-1", "t-2"], np.array([[1.0], [0.0]]))
    s = InMemoryFactStore.from_dir(tmp_path)
    assert s.facts() == ("avail", "emb")
    assert s.spec("emb").columns == ("a", "b") and s.spec("emb").description == "d"
    np.testing.assert_array_equal(s.lookup("emb", ["u-1", "u-2"]).values, [[2, 3], [0, 1]])
    np.testing.assert_array_equal(s.lookup("avail", ["t-2", "t-1"]).values, [[0], [1]])


def test_shipped_facts_are_small_and_documented() -> None:
    from workflows.registry import default_facts_dir

    files = list(default_facts_dir().iterdir())
    assert sum(f.stat().st_size for f in files) < 5_000_000
    s = InMemoryFactStore.from_dir(default_facts_dir())
    assert set(s.facts()) == {"user_embedding", "title_availability", "user_profile", "user_txn_history"}
    for fact in s.facts():
        assert s.spec(fact).description and s.spec(fact).key
