"""Fixtures the repository tests share."""

from __future__ import annotations

import pytest


@pytest.fixture
def reads(monkeypatch) -> list[int]:
    """How many records each read of the repository topic returned, in order (the repository's reads, counted)."""
    import streams.repository.repository as module

    counted: list[int] = []
    real = module.read_to_end

    async def counting(*args, **kwargs):
        records = await real(*args, **kwargs)
        counted.append(len(records))
        return records

    monkeypatch.setattr(module, "read_to_end", counting)
    return counted
