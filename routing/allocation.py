"""Deterministic allocation: buckets for users, partitions for shard keys, shadow sampling.

Every function here is a pure function of its arguments, stable across
processes, machines and Python versions: nothing uses Python's ``hash()``
(salted per process) or ``random``. A user therefore lands in the same bucket,
cell and partition on every router, before and after a restart.

Bucket spaces have :data:`BUCKETS` (10,000) buckets, so percentages have a
resolution of 0.01 %. A percentage ``p`` covers ``round(p * 100)`` buckets;
membership tests are "bucket below the threshold", which is what makes ramps
monotone: raising ``p`` only ever adds buckets, so nobody who was in leaves.
"""

from __future__ import annotations

from hashlib import blake2b

import numpy as np

__all__ = [
    "BUCKETS",
    "bucket_of",
    "buckets_for_percent",
    "in_sample",
    "murmur2",
    "murmur2_many",
    "partitions_for_keys",
    "partition_for",
    "shadow_sampled",
]

BUCKETS = 10_000
"Size of every bucket space; one bucket is 0.01 % of users (or requests)."


def bucket_of(salt: str, key: str) -> int:
    """Return the bucket, in ``0..9999``, of ``key`` in the bucket space named ``salt``.

    The first 8 bytes (big-endian) of ``blake2b(salt + "\\x00" + key)`` modulo
    10,000. The NUL separator keeps ``("ab", "c")`` and ``("a", "bc")`` apart.
    Different salts give statistically independent bucket spaces.
    """
    digest = blake2b(f"{salt}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def buckets_for_percent(percent: float) -> int:
    """Return how many of the 10,000 buckets ``percent`` (0..100) covers."""
    return int(round(percent * 100))


def shadow_sampled(request_id: str, salt: str, percent: float) -> bool:
    """Tell whether the request ``request_id`` is copied to a shadow entry at ``percent``.

    Sampling is per request (not per user) and deterministic, so a replayed
    request is sampled the same way; ``salt`` keeps the entries of one
    objective independent of each other.
    """
    return in_sample(salt, request_id, buckets_for_percent(percent))


def in_sample(salt: str, key: str, threshold: int) -> bool:
    """Tell whether ``key`` falls in the first ``threshold`` of the 10,000 buckets of ``salt``.

    The one definition of shadow sampling: :func:`shadow_sampled`, ``route``
    and ``explain`` all decide through it (``ShadowEntry.samples``). The
    bucket is not computed at 0 % or 100 %.
    """
    if threshold >= BUCKETS:
        return True
    if threshold <= 0:
        return False
    return bucket_of(salt, key) < threshold


def partition_for(shard_key: str, partitions: int) -> int:
    """Return the partition, in ``0..partitions-1``, for ``shard_key``.

    This is Kafka's default partitioner for keyed records (murmur2 of the
    UTF-8 key, sign bit cleared, modulo the partition count) -- the same
    choice the Java client and aiokafka make -- so a record the router places
    explicitly lands where a plain keyed produce from any Kafka client would.
    It changes only when the partition count changes.
    """
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, got {partitions}")
    return (murmur2(shard_key.encode()) & 0x7FFFFFFF) % partitions


_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Return the 32-bit MurmurHash2 of ``data`` as Kafka computes it (unsigned).

    A port of ``org.apache.kafka.common.utils.Utils.murmur2`` (seed
    ``0x9747b28c``).
    """
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    tail = length & ~3
    for i in range(0, tail, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    extra = length & 3
    if extra >= 3:
        h ^= data[tail + 2] << 16
    if extra >= 2:
        h ^= data[tail + 1] << 8
    if extra >= 1:
        h ^= data[tail]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def partitions_for_keys(keys: list[bytes], partitions: int) -> list[int]:
    """:func:`partition_for` of many UTF-8 keys at once: Kafka's partitioner, one numpy pass for all."""
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, got {partitions}")
    if not keys:
        return []
    placed: list[int] = ((murmur2_many(keys) & 0x7FFFFFFF) % partitions).tolist()
    return placed


_M32 = np.uint32(_M)


def murmur2_many(keys: list[bytes]) -> np.ndarray:
    """:func:`murmur2` of every key at once, in numpy (uint32).

    Keys are grouped by length, so each group is one ``(n, length)`` byte matrix hashed a
    4-byte column at a time; uint32 arithmetic wraps exactly as the Java original does.
    """
    out = np.empty(len(keys), dtype=np.uint32)
    by_length: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        by_length.setdefault(len(key), []).append(i)
    with np.errstate(over="ignore"):
        for length, rows in by_length.items():
            data = np.frombuffer(b"".join(keys[i] for i in rows), dtype=np.uint8).reshape(len(rows), length)
            h = np.full(len(rows), (0x9747B28C ^ length) & _MASK, dtype=np.uint32)
            tail = length & ~3
            if tail:
                words = np.ascontiguousarray(data[:, :tail]).view("<u4")
                for j in range(words.shape[1]):
                    k = words[:, j] * _M32
                    k ^= k >> np.uint32(24)
                    k *= _M32
                    h = (h * _M32) ^ k
            extra = length & 3
            if extra >= 3:
                h ^= data[:, tail + 2].astype(np.uint32) << np.uint32(16)
            if extra >= 2:
                h ^= data[:, tail + 1].astype(np.uint32) << np.uint32(8)
            if extra >= 1:
                h ^= data[:, tail].astype(np.uint32)
                h *= _M32
            h ^= h >> np.uint32(13)
            h *= _M32
            h ^= h >> np.uint32(15)
            out[rows] = h
    return out
