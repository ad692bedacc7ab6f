"""The local broker's own steps, against Kafka's real tools (needs the cached Kafka jars)."""

from __future__ import annotations

import uuid

import pytest

import streams.broker.local
from streams.broker.local import BrokerSettings, LocalBroker

pytestmark = pytest.mark.kafka


def test_format_takes_a_cluster_id_that_starts_with_a_dash(kafka_bootstrap, tmp_path, monkeypatch):
    # 0xfb encodes to '-' in URL-safe base64: one random id in 64 starts like this.
    monkeypatch.setattr(streams.broker.local.uuid, "uuid4", lambda: uuid.UUID(bytes=b"\xfb" + bytes(15)))
    broker = LocalBroker(BrokerSettings(port=19_592, home=tmp_path))
    libs = broker.fetch()
    broker.broker_dir.mkdir(parents=True)
    broker._write_properties()
    broker._format(broker._require_java(), libs)
    meta = (broker.data_dir / "meta.properties").read_text()
    assert "cluster.id=-" in meta
