"""Fixtures for the fault suite: an environment under a topic prefix of its own, removed afterwards."""

from __future__ import annotations

import pytest
from cluster_scenarios import ClusterEnv, restore
from fault_scenarios import Env, free_port_run

from streams.transport.settings import KafkaSettings
from workflows import ModelRegistry


@pytest.fixture(scope="session")
def registry() -> ModelRegistry:
    return ModelRegistry.default()


@pytest.fixture
async def env(kafka_bootstrap, kafka_admin, unique, registry, tmp_path) -> Env:
    env = Env.make(KafkaSettings(bootstrap=kafka_bootstrap), f"t{unique}.", tmp_path, registry)
    yield env
    topics = [t for t in await kafka_admin.list_topics() if t.startswith(env.layout.prefix)]
    kafka_admin.created.extend(topics)


@pytest.fixture(scope="module")
def kafka_cluster(tmp_path_factory):
    """A local three-node cluster (RF 3, min ISR 2) on free ports, shared by the cluster scenarios.

    Every cluster test lives in ``test_cluster_faults.py``: one cluster serves them all and is
    stopped when that module ends, so its three JVMs do not load the machine for the rest of
    the suite.

    It has a home of its own (the jars linked from the cached ones), so its state never mixes
    with the shared broker's; it starts only when a cluster test runs.
    """
    from streams.broker.cluster import LocalCluster
    from streams.broker.local import BrokerSettings, LocalBroker

    jars = LocalBroker(BrokerSettings()).fetch().parent  # resolved once per machine, as `make test` does
    home = tmp_path_factory.mktemp("cluster-home")
    (home / jars.name).symlink_to(jars)
    cluster = LocalCluster(BrokerSettings(port=free_port_run(6), nodes=3, home=home, heap=CLUSTER_TEST_HEAP))
    cluster.start(timeout=240)
    try:
        yield cluster
    finally:
        cluster.stop(timeout=60)


CLUSTER_TEST_HEAP = "384m"
"""Each test node's heap: the shared broker and three nodes share a 2-core machine with the pipeline."""


@pytest.fixture
async def cluster_env(kafka_cluster, unique, registry, tmp_path) -> ClusterEnv:
    """A scenario's environment on the cluster, under a prefix of its own; its topics deleted afterwards."""
    from aiokafka.admin import AIOKafkaAdminClient

    cenv = ClusterEnv.make(kafka_cluster, f"c{unique}.", tmp_path, registry)
    await restore(kafka_cluster)  # a whole cluster to start from, whatever the last test left
    yield cenv
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_cluster.bootstrap)
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.startswith(cenv.env.layout.prefix)]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()
