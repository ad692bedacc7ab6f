"""The local single-node Apache Kafka broker (KRaft) for development, tests and the demo.

No Docker needed: Apache Kafka's own jars are resolved from Maven Central through the
small pom in ``resources/`` and cached per user; the broker runs as a background
``java kafka.Kafka`` process with combined broker and controller roles.

Layout under the scoreline home (``SCORELINE_HOME``, else ``$XDG_CACHE_HOME/scoreline``,
else ``~/.cache/scoreline``)::

    kafka-<version>/libs/*.jar      the resolved classpath (``.complete`` marks a whole fetch)
    brokers/<port>/server.properties
    brokers/<port>/data/            KRaft metadata and log segments
    brokers/<port>/broker.log       log4j2 output; its tail is shown when a start fails
    brokers/<port>/state.json       pid, version and bootstrap of the running broker
    clusters/<port>/cluster.json    a local cluster (``--nodes 3``): its size and cluster id
    clusters/<port>/node-<i>/       each node's files, as ``brokers/<port>/`` for one broker

A cluster (``streams.broker.cluster.LocalCluster``) is several of these nodes sharing a
static controller quorum.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from streams.broker.config import (
    DEFAULT_KAFKA_VERSION,
    BrokerSettings,
    BrokerStatus,
    SaslListener,
    scoreline_home,
    scram_user_arguments,
    server_properties,
)
from streams.errors import BrokerError

__all__ = ["BrokerSettings", "BrokerStatus", "LocalBroker", "SaslListener", "DEFAULT_KAFKA_VERSION", "scoreline_home"]

_RESOURCES = Path(__file__).with_name("resources")


Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


class LocalBroker:
    """Fetches, formats, starts, stops and reports one local KRaft broker: alone, or node ``node_id`` of a cluster."""

    def __init__(self, settings: BrokerSettings | None = None, node_id: int = 1) -> None:
        self.settings = settings or BrokerSettings.from_env()
        self.node_id = node_id
        self.port = self.settings.client_port(node_id)
        self.host, self.netns = self.settings.host_of(node_id), self.settings.netns_of(node_id)
        self.bootstrap = f"{self.host}:{self.port}"
        home = self.settings.home or scoreline_home()
        self.libs_dir = home / f"kafka-{self.settings.kafka_version}" / "libs"
        self.cluster_dir = home / "clusters" / str(self.settings.port)
        self.broker_dir = (home / "brokers" / str(self.port) if self.settings.nodes == 1
                           else self.cluster_dir / f"node-{node_id}")
        self.data_dir = self.broker_dir / "data"
        self.log_file = self.broker_dir / "broker.log"
        self.state_file = self.broker_dir / "state.json"
        self.properties_file = self.broker_dir / "server.properties"

    # -- jars -------------------------------------------------------------------------

    def fetch(self, progress: Progress = _quiet) -> Path:
        """Resolve Kafka's jars through Maven into the cache, once; return the libs directory."""
        marker = self.libs_dir / ".complete"
        if marker.exists():
            return self.libs_dir
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError(
                "Maven (mvn) is not on PATH; it fetches Apache Kafka's jars. "
                "Install it (Debian: apt-get install maven) or point --bootstrap at a running Kafka."
            )
        self._require_java()
        progress(f"fetching Apache Kafka {self.settings.kafka_version} jars from Maven Central ...")
        staging = self.libs_dir.with_name("libs.partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            mvn, "-q", "-B", "-f", str(_RESOURCES / "pom.xml"),
            f"-Dkafka.version={self.settings.kafka_version}",
            "dependency:copy-dependencies", "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-20:]
            raise BrokerError(
                f"could not resolve org.apache.kafka:kafka_2.13:{self.settings.kafka_version} through Maven:\n"
                + "\n".join(tail)
            )
        shutil.rmtree(self.libs_dir, ignore_errors=True)
        staging.rename(self.libs_dir)
        marker.touch()
        progress(f"cached {len(list(self.libs_dir.glob('*.jar')))} jars in {self.libs_dir}")
        return self.libs_dir

    # -- lifecycle --------------------------------------------------------------------

    def status(self) -> BrokerStatus:
        """The broker's state as recorded and checked against the live process."""
        state = self._read_state()
        pid = state.get("pid")
        running = pid is not None and _is_our_broker(pid)
        return BrokerStatus(
            running=running,
            bootstrap=self.bootstrap,
            version=state.get("version", self.settings.kafka_version),
            pid=pid if running else None,
            data_dir=str(self.data_dir),
            log_file=str(self.log_file),
        )

    def start(self, timeout: float = 120.0, progress: Progress = _quiet) -> BrokerStatus:
        """Start the broker unless it runs already; return once it answers clients."""
        with self._lock():
            proc = self.launch(progress)
            self.wait_until_answers(proc, timeout)
            return self.status()

    def launch(self, progress: Progress = _quiet, *, cluster_id: str | None = None) -> subprocess.Popen | None:
        """Format (once) and start the broker process without waiting for it; None if it runs already.

        A node of a cluster is formatted with the cluster's ``cluster_id``; it answers only once
        a majority of the quorum runs, so a cluster launches every node before waiting on any.
        """
        if self.status().running:
            return None
        self.broker_dir.mkdir(parents=True, exist_ok=True)
        self._check_port_free()
        libs = self.fetch(progress)
        java = self._require_java()
        self._write_properties()
        if not (self.data_dir / "meta.properties").exists():
            progress(f"formatting KRaft storage of node {self.node_id} ..." if self.settings.nodes > 1
                     else "formatting KRaft storage ...")
            self._format(java, libs, cluster_id)
        progress(f"starting Apache Kafka {self.settings.kafka_version} on {self.bootstrap} ...")
        proc = self._launch(java, libs)
        self.state_file.write_text(json.dumps({
            "pid": proc.pid,
            "version": self.settings.kafka_version,
            "bootstrap": self.bootstrap,
            "node_id": self.node_id,
            "started_at": time.time(),
        }))
        return proc

    def wait_until_answers(self, proc: subprocess.Popen | None, timeout: float) -> None:
        """Return once the broker serves metadata; raise ``BrokerError`` (and kill what was launched) if not in time."""
        try:
            _wait_until_answers(self.bootstrap, deadline=time.monotonic() + timeout, proc=proc,
                                security=self._admin_security())
        except BrokerError as exc:
            if proc is not None:
                self._kill(proc.pid)
            raise BrokerError(f"{exc}\n{self._diagnosis()}") from None

    def send_signal(self, signum: int) -> int | None:
        """Send ``signum`` to the running broker process (a fault to inject: SIGKILL, SIGSTOP, SIGCONT); its pid."""
        pid = self.status().pid
        if pid is None:
            return None
        os.kill(pid, signum)
        if signum == signal.SIGKILL:
            self._kill(pid)  # returns once it is gone
            self.state_file.unlink(missing_ok=True)
        return pid

    def stop(self, timeout: float = 60.0) -> bool:
        """Stop the broker cleanly (SIGTERM, then SIGKILL past the timeout); True if one ran."""
        with self._lock():
            state = self._read_state()
            pid = state.get("pid")
            if pid is None or not _is_our_broker(pid):
                self.state_file.unlink(missing_ok=True)
                return False
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)  # a paused broker cannot act on SIGTERM
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _is_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _is_alive(pid):
                self._kill(pid)
            self.state_file.unlink(missing_ok=True)
            return True

    # -- helpers ----------------------------------------------------------------------

    def _require_java(self) -> str:
        java = shutil.which("java")
        if java is None:
            raise BrokerError(
                "java is not on PATH; Apache Kafka 4.x needs Java 17 or newer "
                "(Debian: apt-get install openjdk-17-jre-headless)."
            )
        return java

    def _check_port_free(self) -> None:
        if self.netns is not None:
            return  # its own namespace: nothing here can hold its address
        for port in (self.port, self.settings.controller_port(self.node_id)):
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((self.host, port))
                except OSError:
                    raise BrokerError(
                        f"port {port} on {self.host} is taken by another process; "
                        "stop it, or run the broker on another port (--port / SCORELINE_BROKER_PORT), "
                        "or use that Kafka with --bootstrap / SCORELINE_BOOTSTRAP."
                    ) from None

    def _write_properties(self) -> None:
        props = server_properties(self.settings, self.data_dir, self.node_id)
        self.properties_file.write_text("".join(f"{k}={v}\n" for k, v in props.items()))

    def _admin_security(self) -> dict[str, str]:
        sasl = self.settings.sasl
        return sasl.client_options(sasl.broker_user) if sasl is not None else {}

    def _classpath(self, libs: Path) -> str:
        return str(libs / "*")

    def _format(self, java: str, libs: Path, cluster_id: str | None = None) -> None:
        cluster_id = cluster_id or new_cluster_id()
        # One node bootstraps a quorum of itself; a cluster's nodes have the static quorum in their properties.
        quorum = ["--standalone"] if self.settings.nodes == 1 else []
        self.data_dir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [java, *self._log_options(), "-cp", self._classpath(libs), "kafka.tools.StorageTool",
             "format", *quorum,
             # `=` form: a base64 id may start with '-', which would read as an option.
             f"--cluster-id={cluster_id}", "-c", str(self.properties_file), *scram_user_arguments(self.settings.sasl)],
            capture_output=True, text=True, timeout=120,
        )
        if proc.returncode != 0:
            raise BrokerError("formatting KRaft storage failed:\n" + (proc.stdout + proc.stderr)[-2000:])

    def _log_options(self) -> list[str]:
        return [
            f"-Dlog4j2.configurationFile={_RESOURCES / 'log4j2.properties'}",
            f"-Dscoreline.broker.log={self.log_file}",
        ]

    def _launch(self, java: str, libs: Path) -> subprocess.Popen:
        netns = ["ip", "netns", "exec", self.netns] if self.netns is not None else []  # exec: the pid is java's
        cmd = [
            *netns, java, "-Xms128m", f"-Xmx{self.settings.heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true", *self._log_options(),
            "-cp", self._classpath(libs), "kafka.Kafka", str(self.properties_file),
        ]
        out = open(self.broker_dir / "broker.out", "ab")
        with out:
            # A session of its own: the broker outlives the `scoreline broker start` that made it.
            return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)

    def _kill(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _is_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)

    def _diagnosis(self) -> str:
        lines: list[str] = []
        for path in (self.log_file, self.broker_dir / "broker.out"):
            if path.exists():
                lines += path.read_text(errors="replace").splitlines()[-25:]
        text = "\n".join(lines)
        if "Address already in use" in text:
            ports = f"{self.port} or {self.settings.controller_port(self.node_id)}"
            hint = f"hint: a port ({ports}) is taken; use --port."
        elif "UnsupportedClassVersionError" in text:
            hint = "hint: this Java is too old; Apache Kafka 4.x needs Java 17 or newer."
        elif "OutOfMemoryError" in text:
            hint = "hint: the broker ran out of heap; raise SCORELINE_BROKER_HEAP."
        elif "meta.properties" in text or "cluster" in text.lower() and "id" in text.lower():
            hint = f"hint: the storage in {self.data_dir} may be from another cluster; remove it and start again."
        else:
            hint = f"hint: see {self.log_file}."
        return f"last lines of the broker log:\n{text}\n{hint}"

    def _read_state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def _lock(self) -> contextlib.AbstractContextManager[None]:
        # Two commands starting the broker at once (a test run and the demo) must not race.
        return dir_lock(self.broker_dir)


@contextlib.contextmanager
def dir_lock(directory: Path):
    """Hold an exclusive lock on ``directory`` (made if missing) across processes."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def new_cluster_id() -> str:
    """A fresh KRaft cluster id (22 characters of URL-safe base64)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of this process counts as gone.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def _is_our_broker(pid: int) -> bool:
    """True if ``pid`` is alive and is a Kafka broker (guards against a recycled pid)."""
    if not _is_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return sys.platform != "linux"
    return b"kafka.Kafka" in cmdline


def _wait_until_answers(bootstrap: str, *, deadline: float, proc: subprocess.Popen | None,
                        security: dict[str, str] | None = None) -> None:
    """Poll until the broker serves metadata with itself in it, the process dies, or time runs out."""
    while True:
        if proc is not None and proc.poll() is not None:
            raise BrokerError(f"the broker process exited with code {proc.returncode} while starting")
        if _run_to_completion(_answers(bootstrap, security or {})):
            return
        if time.monotonic() > deadline:
            raise BrokerError(f"the broker did not answer on {bootstrap} in time")
        time.sleep(0.25)


def _run_to_completion(coroutine):
    """Run ``coroutine`` to its end from sync code, even when called inside a running event loop.

    ``LocalBroker.start`` is synchronous but is called from commands that already run asyncio
    (``scoreline run`` resolving its bootstrap); there the check runs on a thread of its own.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def _answers(bootstrap: str, security: dict[str, str]) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    host, _, port = bootstrap.rpartition(":")
    try:
        # Ask Kafka only once the port accepts: the client logs every refused connection.
        with socket.create_connection((host, int(port)), timeout=1):
            pass
    except OSError:
        return False
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000, **security)
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
        return bool(cluster.get("brokers"))
    except Exception:  # noqa: BLE001 - not up yet: any client error means "ask again"
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
