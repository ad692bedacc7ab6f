"""The aiokafka fix scoreline installs: an offset lookup a stale leader refuses refreshes the metadata (pure)."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import pytest
from aiokafka.consumer.fetcher import Fetcher
from aiokafka.errors import NotLeaderForPartitionError

import streams.transport.settings  # noqa: F401 - installs the fix, as every scoreline process does


def test_the_position_lookup_still_goes_through_the_wrapped_method():
    """pyproject.toml pins aiokafka to 0.14.x: a release that moves this path must come by a change of ours."""
    assert getattr(Fetcher._proc_offset_request, "_scoreline_fix", False)
    assert "self._proc_offset_request(" in inspect.getsource(Fetcher._update_fetch_positions)


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
