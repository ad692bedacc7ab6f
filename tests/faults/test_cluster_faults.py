"""Broker faults on a three-node cluster (RF 3, min ISR 2): no request lost, whatever broker dies or hangs.

The scenarios live in ``cluster_scenarios.py`` and also drive ``scripts/fault_report.py
--cluster``, which prints the cluster table of ``docs/reliability.md``. One cluster serves the
session; each scenario leaves it whole again (every node up, every replica in sync).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from cluster_scenarios import CLUSTER_SCENARIOS, wait_in_sync
from fault_scenarios import check

from schemas.messages import Status
from streams.broker.cluster import LocalCluster
from streams.services.pipeline import Pipeline, PipelineOptions

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(420)]


def _broker_cli(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scoreline", "broker", *args, "--port", str(cluster.settings.port)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "SCORELINE_HOME": str(cluster.settings.home),
                               "SCORELINE_BROKER_HEAP": cluster.settings.heap})


async def test_status_lists_every_node_and_start_brings_back_only_the_dead(kafka_cluster):
    status = json.loads(_broker_cli(kafka_cluster, "status", "--json").stdout)  # found by its port: no --nodes
    assert status["running"] and status["bootstrap"] == kafka_cluster.bootstrap
    nodes = status["nodes"]
    assert [n["node_id"] for n in nodes] == [1, 2, 3] and all(n["running"] and n["pid"] for n in nodes)
    assert [n["port"] for n in nodes] == [kafka_cluster.settings.port + i for i in range(3)]
    assert sum(n["controller"] for n in nodes) == 1  # one active controller, named

    kafka_cluster.node(3).send_signal(signal.SIGKILL)
    down = json.loads(_broker_cli(kafka_cluster, "status", "--json").stdout)
    assert not down["running"] and [n["running"] for n in down["nodes"]] == [True, True, False]

    started = _broker_cli(kafka_cluster, "start", "--nodes", "3", "--json")
    assert started.returncode == 0, started.stderr
    after = json.loads(started.stdout)
    assert after["running"]
    assert [n["pid"] for n in after["nodes"][:2]] == [n["pid"] for n in nodes[:2]]  # the live ones left alone
    assert after["nodes"][2]["pid"] != nodes[2]["pid"]


async def test_topics_follow_the_cluster(cluster_env):
    """scoreline's topics get three replicas and min.insync.replicas 2 on three brokers, without configuration."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    env = cluster_env.env
    async with Pipeline(env.kafka, env.layout, env.rules, env.registry, PipelineOptions(roles=("router",))) as p:
        await p.wait_ready()
    admin = AIOKafkaAdminClient(bootstrap_servers=env.kafka.bootstrap)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if t.startswith(env.layout.prefix)]
        assert env.layout.requests in topics and env.layout.shard("s1") in topics
        for topic in await admin.describe_topics(topics):
            assert {len(p["replicas"]) for p in topic["partitions"]} == {3}, topic
        (described,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, env.layout.requests)])
        configs = {c[0]: c[1] for c in described.resources[0][4]}
        assert configs["min.insync.replicas"] == "2"
    finally:
        await admin.close()
    await wait_in_sync(env.kafka.bootstrap, topics=topics)


def _passes(tally) -> None:
    print(f"{tally.scenario}: {tally.row()}")  # the figures of docs/reliability.md, with -s
    assert not check(tally), f"{check(tally)}: {tally}"
    assert tally.requests > 0 and tally.lost == 0
    assert sum(tally.statuses.values()) == tally.results + tally.duplicated
    # Nothing here is bad input or a slow model: every request is scored, none dead-lettered.
    assert set(tally.statuses) == {Status.OK} and tally.dead_letters == 0, tally.statuses
    assert tally.longest_gap_s is not None
    assert tally.shadowed and tally.shadow_unpaired == 0  # every shadow copy scored too


@pytest.mark.parametrize("scenario", sorted(CLUSTER_SCENARIOS))
async def test_cluster_fault(cluster_env, scenario):
    _passes(await CLUSTER_SCENARIOS[scenario](cluster_env))
