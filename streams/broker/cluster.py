"""A local Apache Kafka cluster: several KRaft nodes (broker and controller in one) on one machine.

``scoreline broker start --nodes 3`` runs three :class:`~streams.broker.local.LocalBroker`
nodes from the same jars, on consecutive client ports from ``--port`` (then their controller
ports), each with its own data directory under ``SCORELINE_HOME/clusters/<port>/``. The
controller quorum is all three; topics default to three replicas with ``min.insync.replicas``
2, and no unclean leader election (``streams.broker.config.server_properties``).

Faults are injected one node at a time (``node(i).send_signal(SIGKILL)``, ``stop_node``,
``start_node``): the fault suite and ``scripts/fault_report.py --cluster`` use them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path

from streams.broker.config import BrokerSettings, ClusterStatus, NodeStatus
from streams.broker.local import (
    LocalBroker,
    Progress,
    _is_alive,
    _quiet,
    _run_to_completion,
    dir_lock,
    new_cluster_id,
)
from streams.errors import BrokerError

__all__ = ["LocalCluster", "active_controller", "leader_counts"]


class LocalCluster:
    """Starts, stops and reports ``settings.nodes`` local KRaft nodes as one cluster."""

    def __init__(self, settings: BrokerSettings | None = None) -> None:
        self.settings = settings or BrokerSettings.from_env(nodes=3)
        if self.settings.nodes < 2:
            raise ValueError("a cluster has at least two nodes; LocalBroker runs one")
        if self.settings.sasl is not None:
            raise ValueError("SASL is set up for a single local broker only")
        self.nodes = [LocalBroker(self.settings, node_id=n) for n in range(1, self.settings.nodes + 1)]
        self.cluster_dir = self.nodes[0].cluster_dir
        self.cluster_file = self.cluster_dir / "cluster.json"

    @property
    def bootstrap(self) -> str:
        """Every node's client address, comma-separated, as clients take it."""
        return self.settings.bootstrap

    def node(self, node_id: int) -> LocalBroker:
        """Node ``node_id`` (1-based)."""
        return self.nodes[node_id - 1]

    # -- lifecycle --------------------------------------------------------------------

    def start(self, timeout: float = 180.0, progress: Progress = _quiet) -> ClusterStatus:
        """Start every node that is not running; return once every node answers.

        Nodes already running are left alone, so a start after a crash brings back only the dead.
        """
        with self._lock():
            cluster_id = self._cluster_id()
            self.nodes[0].fetch(progress)
            launched = [(node, node.launch(progress, cluster_id=cluster_id)) for node in self.nodes]
            deadline = time.monotonic() + timeout
            try:
                for node, proc in launched:
                    node.wait_until_answers(proc, max(1.0, deadline - time.monotonic()))
                self.wait_for_quorum(max(1.0, deadline - time.monotonic()))
            except BrokerError:
                for node, proc in launched:
                    if proc is not None:
                        node.stop(timeout=10)
                raise
            return self.status()

    def stop(self, timeout: float = 60.0) -> bool:
        """Stop every node (SIGTERM to all at once, then SIGKILL past the timeout); True if any ran."""
        with self._lock():
            pids = [(node, node.status().pid) for node in self.nodes]
            running = [(node, pid) for node, pid in pids if pid is not None]
            for _, pid in running:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)  # a paused node cannot act on SIGTERM
                    os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while any(_is_alive(pid) for _, pid in running) and time.monotonic() < deadline:
                time.sleep(0.1)
            for node, pid in running:
                if _is_alive(pid):
                    node._kill(pid)
            for node in self.nodes:
                node.state_file.unlink(missing_ok=True)
            return bool(running)

    def start_node(self, node_id: int, timeout: float = 120.0) -> None:
        """Start one node again (after a kill or a stop) and return once it answers."""
        with self._lock():
            node = self.node(node_id)
            node.wait_until_answers(node.launch(cluster_id=self._cluster_id()), timeout)

    def stop_node(self, node_id: int, timeout: float = 60.0) -> None:
        """Stop one node cleanly (a controlled shutdown: its leaderships move first)."""
        self.node(node_id).stop(timeout)

    def wait_for_quorum(self, timeout: float = 60.0) -> None:
        """Return once every running node is registered with the controller (the cluster lists it)."""
        want = {n.node_id for n in self.nodes if n.status().running}
        deadline = time.monotonic() + timeout
        while True:
            brokers = _run_to_completion(_broker_ids(self.bootstrap))
            if brokers is not None and want <= brokers:
                return
            if time.monotonic() > deadline:
                raise BrokerError(f"the cluster on {self.bootstrap} lists nodes {sorted(brokers or ())}, "
                                  f"not {sorted(want)}, after {timeout:.0f} s")
            time.sleep(0.25)

    # -- status -----------------------------------------------------------------------

    def status(self) -> ClusterStatus:
        """Every node's process, whether it is the active controller, and how many partitions it leads."""
        statuses = [node.status() for node in self.nodes]
        live = [node for node, s in zip(self.nodes, statuses) if s.running]
        leaders = _run_to_completion(leader_counts(self.bootstrap)) if live else None
        controller = active_controller(live)
        nodes = [NodeStatus(node_id=node.node_id, pid=s.pid, port=node.port, running=s.running,
                            controller=s.running and node.node_id == controller,
                            leader_partitions=(leaders.get(node.node_id, 0) if s.running else 0)
                            if leaders is not None else None,
                            data_dir=s.data_dir, log_file=s.log_file)
                 for node, s in zip(self.nodes, statuses)]
        return ClusterStatus(running=all(s.running for s in statuses), bootstrap=self.bootstrap,
                             version=self.settings.kafka_version, nodes=nodes)

    @classmethod
    def found(cls, settings: BrokerSettings) -> LocalCluster | None:
        """The cluster once started on ``settings.port`` under this home, if there is one (its size from its file)."""
        home_cluster = LocalBroker(settings).cluster_dir / "cluster.json"
        try:
            nodes = int(json.loads(home_cluster.read_text())["nodes"])
        except (FileNotFoundError, ValueError, KeyError):
            return None
        from dataclasses import replace

        return cls(replace(settings, nodes=nodes))

    # -- helpers ----------------------------------------------------------------------

    def _cluster_id(self) -> str:
        """The id every node is formatted with, made once and kept in ``cluster.json``."""
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
            recorded = json.loads(self.cluster_file.read_text())
            if int(recorded["nodes"]) != self.settings.nodes:
                raise BrokerError(f"{self.cluster_dir} holds a {recorded['nodes']}-node cluster, not "
                                  f"{self.settings.nodes}; stop it and remove the directory, or use another --port")
            return str(recorded["cluster_id"])
        cluster_id = new_cluster_id()
        self.cluster_dir.mkdir(parents=True, exist_ok=True)
        self.cluster_file.write_text(json.dumps({"nodes": self.settings.nodes, "cluster_id": cluster_id,
                                                 "bootstrap": self.bootstrap}))
        return cluster_id

    def _lock(self) -> contextlib.AbstractContextManager[None]:
        return dir_lock(self.cluster_dir)


def active_controller(nodes: list[LocalBroker]) -> int | None:
    """The quorum's leader, as the live nodes' ``quorum-state`` files record it (the highest epoch wins)."""
    best: tuple[int, int] | None = None
    for node in nodes:
        path = Path(node.data_dir) / "__cluster_metadata-0" / "quorum-state"
        with contextlib.suppress(OSError, ValueError):
            state = json.loads(path.read_text())
            leader, epoch = int(state.get("leaderId", -1)), int(state.get("leaderEpoch", -1))
            if leader >= 0 and (best is None or epoch > best[1]):
                best = (leader, epoch)
    return best[0] if best else None


async def _broker_ids(bootstrap: str) -> set[int] | None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await admin.start()
        return {b["node_id"] for b in (await admin.describe_cluster())["brokers"]}
    except Exception:  # noqa: BLE001 - not reachable now: the caller asks again
        return None
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


async def leader_counts(bootstrap: str, topics: list[str] | None = None,
                        timeout_s: float = 5.0) -> dict[int, int] | None:
    """Partitions led per node id, over ``topics`` (default: every topic); None if the cluster does not answer."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        names = topics if topics is not None else await admin.list_topics()
        counts: dict[int, int] = {}
        for topic in await asyncio.wait_for(admin.describe_topics(names), timeout_s):
            for p in topic["partitions"]:
                if p["leader"] >= 0:
                    counts[p["leader"]] = counts.get(p["leader"], 0) + 1
        return counts
    except Exception:  # noqa: BLE001 - status reports what it can
        return None
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
