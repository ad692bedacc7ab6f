"""Stable hashing: fixed values pin the hash functions so a change fails loudly."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routing.allocation import (
    BUCKETS,
    bucket_of,
    murmur2,
    murmur2_many,
    partition_for,
    partitions_for_keys,
    shadow_sampled,
)


@pytest.mark.parametrize(
    ("key", "partitions", "expected"),
    [
        ("u-1", 3, 1),
        ("u-1", 12, 7),
        ("u-1", 48, 7),
        ("u-42", 12, 1),
        ("u-42", 48, 25),
        ("user-123456", 12, 9),
        ("user-123456", 48, 45),
        ("ü-7", 48, 13),
    ],
)
def test_partition_for_is_pinned(key: str, partitions: int, expected: int) -> None:
    assert partition_for(key, partitions) == expected


def test_murmur2_matches_kafka_reference_values() -> None:
    # Kafka Utils.murmur2 as unsigned ints (cross-checked with the Java client port in aiokafka).
    assert murmur2(b"") == 275646681
    assert murmur2(b"u-1") == 3528448887


def test_partition_for_rejects_no_partitions() -> None:
    with pytest.raises(ValueError):
        partition_for("u-1", 0)


@pytest.mark.parametrize(
    ("salt", "key", "expected"),
    [("tr-2026-11", "u-1", 2280), ("tr-2026-11", "u-42", 775), ("title-ranking", "u-1", 5293), ("s", "r-1", 6710)],
)
def test_bucket_of_is_pinned(salt: str, key: str, expected: int) -> None:
    assert bucket_of(salt, key) == expected


def test_salt_and_key_are_separated() -> None:
    assert bucket_of("ab", "c") != bucket_of("a", "bc")


@given(st.text(), st.text())
def test_bucket_in_range(salt: str, key: str) -> None:
    assert 0 <= bucket_of(salt, key) < BUCKETS


@given(st.text(min_size=1), st.integers(min_value=1, max_value=1000))
def test_partition_in_range(key: str, partitions: int) -> None:
    assert 0 <= partition_for(key, partitions) < partitions


@given(st.text(), st.integers(min_value=0, max_value=10_000), st.integers(min_value=0, max_value=10_000))
def test_shadow_sampling_is_monotone(request_id: str, a: int, b: int) -> None:
    low, high = sorted((a / 100, b / 100))
    if shadow_sampled(request_id, "salt", low):
        assert shadow_sampled(request_id, "salt", high)


def test_shadow_sampling_edges() -> None:
    assert shadow_sampled("r-1", "s", 100)
    assert not shadow_sampled("r-1", "s", 0)
    assert not shadow_sampled("r-1", "s", 50)  # bucket 6710
    assert shadow_sampled("r-1", "s", 67.11)


def test_murmur2_many_agrees_with_murmur2_on_every_key():
    """The outbox hashes a batch's keys in one numpy pass; it must agree with Kafka's murmur2 on every key."""
    rng = random.Random(6)
    keys = [b"", b"a", b"ab", b"abc", b"abcd"] + [rng.randbytes(rng.randrange(40)) for _ in range(500)]
    assert [int(h) for h in murmur2_many(keys)] == [murmur2(k) for k in keys]


def test_partitions_for_keys_places_each_key_as_partition_for_does():
    keys = [f"u-{i}" for i in range(300)] + ["", "ü-ß"]
    assert partitions_for_keys([k.encode() for k in keys], 7) == [partition_for(k, 7) for k in keys]
    assert partitions_for_keys([], 7) == []
    with pytest.raises(ValueError):
        partitions_for_keys([b"k"], 0)
