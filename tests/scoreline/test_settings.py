"""Where commands find Kafka: flag, then SCORELINE_BOOTSTRAP, then the local broker."""

from __future__ import annotations

import argparse

import pytest

from scoreline import settings
from streams.broker.local import LocalBroker


@pytest.mark.kafka
async def test_the_local_broker_is_found_from_inside_a_running_event_loop(kafka_bootstrap, monkeypatch):
    """`scoreline run` resolves its bootstrap inside asyncio; that must not break the broker check."""
    if not LocalBroker().status().running:
        pytest.skip("the session's broker is not the local broker (testcontainers or an external cluster)")
    monkeypatch.delenv("SCORELINE_BOOTSTRAP", raising=False)
    assert settings.resolve_bootstrap(argparse.Namespace(bootstrap=None)) == kafka_bootstrap


def test_the_flag_comes_first(monkeypatch):
    monkeypatch.setenv("SCORELINE_BOOTSTRAP", "env-host:9092")
    assert settings.resolve_bootstrap(argparse.Namespace(bootstrap="flag-host:9092")) == "flag-host:9092"
    assert settings.resolve_bootstrap(argparse.Namespace(bootstrap=None)) == "env-host:9092"


def test_memory_sizes_read_as_people_write_them():
    from scoreline.settings import ConfigError, parse_bytes

    assert parse_bytes("512MiB") == 512 * 2**20 and parse_bytes("2GiB") == 2 * 2**30
    assert parse_bytes("1.5GB") == 1_500_000_000 and parse_bytes("4096") == 4096
    with pytest.raises(ConfigError, match="memory size '2 potatoes'"):
        parse_bytes("2 potatoes")
