"""The aiokafka fix scoreline installs: an offset lookup a stale leader refuses refreshes the metadata (pure)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from aiokafka.consumer.fetcher import Fetcher
from aiokafka.errors import NotLeaderForPartitionError

import streams.transport.settings  # noqa: F401 - installs the fix, as every scoreline process does


class _Client:
    """Answers every ListOffsets with ``error_code`` for the partition, and counts metadata refreshes."""

    def __init__(self, error_code: int) -> None:
        self.error_code, self.refreshes = error_code, 0

    async def send(self, node_id, request):
        return SimpleNamespace(API_VERSION=1, topics=[("t", [(0, self.error_code, -1, 42)])])

    def force_metadata_update(self):
        self.refreshes += 1


async def test_a_stale_leader_refreshes_the_metadata_before_the_retry():
    client = _Client(NotLeaderForPartitionError.errno)
    fetcher = SimpleNamespace(_client=client, _isolation_level=0)
    with pytest.raises(NotLeaderForPartitionError):
        await Fetcher._proc_offset_request(fetcher, 1, {"t": [(0, -2)]})
    # aiokafka 0.14 alone retries the same broker until the periodic refresh (five minutes).
    assert client.refreshes == 1


async def test_an_answer_needs_no_refresh():
    client = _Client(0)
    fetcher = SimpleNamespace(_client=client, _isolation_level=0)
    offsets = await Fetcher._proc_offset_request(fetcher, 1, {"t": [(0, -2)]})
    assert offsets and client.refreshes == 0
