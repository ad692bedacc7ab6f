"""The local cluster's configuration and the replication scoreline's topics follow (pure: no broker)."""

from __future__ import annotations

from pathlib import Path

from streams.broker.config import BrokerSettings, server_properties
from streams.transport.admin import replication_for, topic_replication


def test_each_node_of_three_has_its_ports_and_the_whole_quorum():
    settings = BrokerSettings(port=19092, nodes=3)
    assert settings.bootstrap == "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094"
    assert settings.ports == list(range(19092, 19098))
    props = server_properties(settings, Path("/data"), node_id=2)
    assert props["node.id"] == "2"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19093,CONTROLLER://127.0.0.1:19096"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19095,2@127.0.0.1:19096,3@127.0.0.1:19097"
    assert "controller.quorum.bootstrap.servers" not in props  # a static quorum, not a standalone one
    assert (props["default.replication.factor"], props["min.insync.replicas"]) == ("3", "2")
    assert props["offsets.topic.replication.factor"] == "3" and props["transaction.state.log.min.isr"] == "2"
    assert props["unclean.leader.election.enable"] == "false"


def test_one_node_keeps_its_standalone_quorum_and_one_replica():
    settings = BrokerSettings(port=9092)
    assert settings.bootstrap == "127.0.0.1:9092" and settings.controller_port(1) == 9093
    props = server_properties(settings, Path("/data"))
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:9093"
    assert props["offsets.topic.replication.factor"] == "1" and "min.insync.replicas" not in props


def test_topics_follow_the_cluster_up_to_three_replicas():
    assert [replication_for(n) for n in (0, 1, 2, 3, 5)] == [1, 1, 2, 3, 3]
    assert topic_replication(3) == {"min.insync.replicas": "2"}
    assert topic_replication(2) == {} and topic_replication(1) == {}  # two of two would stop every write on one loss


def test_nodes_on_hosts_of_their_own_listen_and_advertise_their_own_address():
    """The network-fault harness: each node in a namespace of its own, on the same ports of its own address."""
    from streams.broker.local import LocalBroker

    hosts = ("10.213.77.1", "10.213.77.2", "10.213.77.3")
    settings = BrokerSettings(port=9092, nodes=3, node_hosts=hosts, node_netns=("n1", "n2", "n3"))
    assert settings.bootstrap == "10.213.77.1:9092,10.213.77.2:9092,10.213.77.3:9092"
    props = server_properties(settings, Path("/data"), node_id=3)
    assert props["listeners"] == "PLAINTEXT://10.213.77.3:9092,CONTROLLER://10.213.77.3:9093"
    assert props["advertised.listeners"] == "PLAINTEXT://10.213.77.3:9092"
    assert props["controller.quorum.voters"] == "1@10.213.77.1:9093,2@10.213.77.2:9093,3@10.213.77.3:9093"
    node = LocalBroker(settings, node_id=2)
    assert (node.bootstrap, node.netns) == ("10.213.77.2:9092", "n2")
