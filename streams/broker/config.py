"""How the local broker is configured: its settings, its status, and its ``server.properties``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

__all__ = ["BrokerSettings", "BrokerStatus", "ClusterStatus", "NodeStatus", "SaslListener", "CLUSTER_HEAP",
           "DEFAULT_KAFKA_VERSION", "scoreline_home", "server_properties", "sasl_properties", "scram_user_arguments"]

DEFAULT_KAFKA_VERSION = "4.1.1"


def scoreline_home() -> Path:
    """Where scoreline keeps its caches and local broker state."""
    if home := os.environ.get("SCORELINE_HOME"):
        return Path(home)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "scoreline"


@dataclass(frozen=True)
class SaslListener:
    """Run the client port as ``SASL_PLAINTEXT`` with ACLs enforced (KRaft's ``StandardAuthorizer``).

    Every user may log in with PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SCRAM credentials are
    written when the storage is formatted, so users are fixed for the life of the data dir).
    The broker talks to itself (controller and inter-broker) as ``broker_user``; it and
    ``super_users`` bypass ACLs; everyone else needs ACLs for everything.
    """

    users: tuple[tuple[str, str], ...]
    """``(name, password)`` of every client principal (``User:<name>``)."""
    super_users: tuple[str, ...] = ("scoreline",)
    """Principals (user names) allowed everything, e.g. the scoreline service account."""
    broker_user: str = "broker"
    broker_password: str = "broker-secret"

    def client_options(self, user: str, mechanism: str = "PLAIN") -> dict[str, str]:
        """aiokafka security options to log in as ``user`` (one of ``users``, or the broker)."""
        passwords = dict(self.users) | {self.broker_user: self.broker_password}
        return {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": mechanism,
                "sasl_plain_username": user, "sasl_plain_password": passwords[user]}


@dataclass(frozen=True)
class BrokerSettings:
    """How the local broker is run."""

    port: int = 9092
    """The PLAINTEXT client port of node 1; node ``i`` of a cluster listens on ``port + i - 1``."""
    nodes: int = 1
    """Nodes of the local cluster, each broker and controller in one; 3 for replication factor 3."""
    host: str = "127.0.0.1"
    """Listen and advertised address: loopback only."""
    kafka_version: str = DEFAULT_KAFKA_VERSION
    """Apache Kafka release whose jars are resolved from Maven Central."""
    heap: str = "768m"
    """Maximum JVM heap of each node; a single test broker needs little (``cluster_heap`` for a cluster)."""
    home: Path | None = None
    """Cache and state root; ``scoreline_home()`` when None."""
    sasl: SaslListener | None = None
    """SASL and ACLs on the client port; None (the default) for a PLAINTEXT broker without ACLs."""
    node_hosts: tuple[str, ...] = ()
    """One address per node, for nodes on hosts of their own (the network-fault harness, where
    each node runs in a network namespace): every node then listens on ``port`` and
    ``port + 1`` of its own address. Empty (the default): every node on ``host``, on
    consecutive ports."""
    node_netns: tuple[str, ...] = ()
    """The network namespace each node's process runs in (``ip netns exec``); empty: this one."""

    @classmethod
    def from_env(cls, port: int | None = None, nodes: int | None = None) -> BrokerSettings:
        """Settings from ``SCORELINE_BROKER_PORT``, ``SCORELINE_BROKER_NODES``, ``SCORELINE_KAFKA_VERSION``,
        ``SCORELINE_BROKER_HEAP`` (default 768m for one node, 512m each for a cluster)."""
        nodes = nodes or int(os.environ.get("SCORELINE_BROKER_NODES", "1"))
        return cls(
            port=port or int(os.environ.get("SCORELINE_BROKER_PORT", "9092")),
            nodes=nodes,
            kafka_version=os.environ.get("SCORELINE_KAFKA_VERSION", DEFAULT_KAFKA_VERSION),
            heap=os.environ.get("SCORELINE_BROKER_HEAP", "768m" if nodes == 1 else CLUSTER_HEAP),
        )

    @property
    def bootstrap(self) -> str:
        """The bootstrap address clients use: every node's client port, comma-separated."""
        return ",".join(f"{self.host_of(n)}:{self.client_port(n)}" for n in range(1, self.nodes + 1))

    def host_of(self, node_id: int) -> str:
        """The address node ``node_id`` listens on and advertises."""
        return self.node_hosts[node_id - 1] if self.node_hosts else self.host

    def netns_of(self, node_id: int) -> str | None:
        """The network namespace node ``node_id`` runs in, if not this process's."""
        return self.node_netns[node_id - 1] if self.node_netns else None

    def client_port(self, node_id: int) -> int:
        """Node ``node_id``'s client port: consecutive from ``port`` (``port`` itself on hosts of their own)."""
        return self.port if self.node_hosts else self.port + node_id - 1

    def controller_port(self, node_id: int) -> int:
        """Node ``node_id``'s controller port: consecutive after the client ports (``port + 1`` on one node
        or on hosts of their own)."""
        return self.port + 1 if self.node_hosts else self.port + self.nodes + node_id - 1

    @property
    def ports(self) -> list[int]:
        """Every port the broker or cluster listens on."""
        return list(range(self.port, self.port + 2 * self.nodes))


CLUSTER_HEAP = "512m"
"""Each node's heap in a local cluster: three nodes and the pipeline share a 2-core machine."""


class BrokerStatus(NamedTuple):
    """What ``scoreline broker status`` reports."""

    running: bool
    bootstrap: str
    version: str
    pid: int | None
    data_dir: str
    log_file: str

    def as_dict(self) -> dict:
        """The JSON form printed by ``status --json``."""
        return self._asdict()


class NodeStatus(NamedTuple):
    """One node of a local cluster, as ``scoreline broker status --json`` lists it."""

    node_id: int
    pid: int | None
    port: int
    running: bool
    controller: bool
    """Whether this node is the active controller (the quorum's leader)."""
    leader_partitions: int | None
    """Partitions it leads now; None when the cluster could not be asked."""
    data_dir: str
    log_file: str


class ClusterStatus(NamedTuple):
    """What ``scoreline broker status`` reports for a local cluster."""

    running: bool
    """Every node runs."""
    bootstrap: str
    version: str
    nodes: list[NodeStatus]

    def as_dict(self) -> dict:
        """The JSON form printed by ``status --json``."""
        return {"running": self.running, "bootstrap": self.bootstrap, "version": self.version,
                "nodes": [n._asdict() for n in self.nodes]}


def server_properties(s: BrokerSettings, data_dir: Path, node_id: int = 1) -> dict[str, str]:
    """The ``server.properties`` of node ``node_id`` (broker and controller in one) of a KRaft cluster.

    One node (the default) bootstraps its quorum alone (``--standalone``); a cluster has a
    static quorum of every node, replication factor 3 with ``min.insync.replicas`` 2 for every
    topic (internal ones too), and no unclean leader election: an acknowledged record is on
    two replicas before the producer hears so, and only an in-sync replica may lead.
    """
    port, controller, host = s.client_port(node_id), s.controller_port(node_id), s.host_of(node_id)
    replicas, min_isr = (str(min(3, s.nodes)), str(min(2, s.nodes)))
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.bootstrap.servers": f"{host}:{controller}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        # Internal topics as replicated as the cluster allows: one replica on one node.
        "offsets.topic.replication.factor": replicas,
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": min_isr,
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": min_isr,
        # Tests and the demo join many groups; waiting for more members only slows them.
        "group.initial.rebalance.delay.ms": "0",
        # Kafka's default; scoreline creates its own topics explicitly, this serves plain producers.
        "auto.create.topics.enable": "true",
        "log.retention.hours": "24",
        "log.segment.bytes": str(64 * 1024 * 1024),
        "num.network.threads": "2",
        "num.io.threads": "4",
    }
    if s.nodes > 1:
        del props["controller.quorum.bootstrap.servers"]
        props.update({
            "controller.quorum.voters": ",".join(f"{n}@{s.host_of(n)}:{s.controller_port(n)}"
                                                for n in range(1, s.nodes + 1)),
            "default.replication.factor": replicas,
            "min.insync.replicas": min_isr,
            "unclean.leader.election.enable": "false",
            # A replica that stops fetching for this long leaves the ISR (Kafka's default is 30 s).
            "replica.lag.time.max.ms": "10000",
        })
    if s.sasl is not None:
        props.update(sasl_properties(s, s.sasl))
    return props


def sasl_properties(s: BrokerSettings, sasl: SaslListener) -> dict[str, str]:
    """The listener, JAAS and authorizer properties of a SASL-enabled local broker."""
    plain_users = " ".join(f'user_{name}="{password}"'
                           for name, password in (*sasl.users, (sasl.broker_user, sasl.broker_password)))
    plain = (f'org.apache.kafka.common.security.plain.PlainLoginModule required username="{sasl.broker_user}" '
             f'password="{sasl.broker_password}" {plain_users};')
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    return {
        # Both ports speak SASL: the controller too, so no unauthenticated principal needs super powers.
        "listeners": f"SASL_PLAINTEXT://{s.host}:{s.port},CONTROLLER://{s.host}:{s.controller_port(1)}",
        "advertised.listeners": f"SASL_PLAINTEXT://{s.host}:{s.port}",
        "inter.broker.listener.name": "SASL_PLAINTEXT",
        "listener.security.protocol.map": "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
        "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        "sasl.mechanism.inter.broker.protocol": "PLAIN",
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": plain,
        "listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config": scram,
        "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config": scram,
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": plain,
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": ";".join(f"User:{u}" for u in (sasl.broker_user, *sasl.super_users)),
        "allow.everyone.if.no.acl.found": "false",
    }


def scram_user_arguments(sasl: SaslListener | None) -> list[str]:
    """``kafka-storage format`` arguments that create the SCRAM users at format time."""
    if sasl is None:
        return []
    return [arg for name, password in sasl.users for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512")
            for arg in ("--add-scram", f"{mechanism}=[name={name},password={password}]")]
