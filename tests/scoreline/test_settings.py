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
