"""Hosts of their own on one machine: network namespaces on one bridge, and the faults between them.

Each host is a network namespace with one interface, ``eth0``, and an address of its own on
``10.213.77.0/24``; the other end of its veth pair is a port of a bridge that lives in a
namespace of its own (the switch), so nothing of this touches the machine's own network and
deleting the namespaces removes all of it. Namespaces are named ``scl<pid>-<host>`` after the
process that made them, so a later run removes what a killed one left behind.

Faults, all of them silent (a peer that stops answering, never a connection refused):

- :meth:`Network.cut`: packets from one host to another go to a MAC address nobody has (a
  permanent neighbour entry), so they vanish on the bridge; both ways by default, one way
  (``both=False``) for a one-way partition. TCP sees retransmissions time out, as across a
  broken switch.
- :meth:`Network.slow`: a token-bucket filter (``tc tbf``) on both ends of a host's link: a
  slow link, whose queue adds delay under load and drops what waits too long. This kernel has
  no ``netem`` (delay, jitter and random loss), nor any ``tc`` classifier or packet filter
  (iptables, nftables), so these two are the faults it can make.

Root only: :func:`unavailable` says why a machine cannot run it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = ["Host", "Network", "remove_stale", "unavailable"]

SUBNET = "10.213.77"
NOBODY = "02:00:00:00:00:01"
"""The MAC a cut host's packets are sent to: locally administered, on no port of the bridge."""
_NAME = re.compile(r"^scl(\d+)-\w+$")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


def unavailable() -> str | None:
    """Why network namespaces cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "needs iproute2 (ip, tc)"
    probe = f"scl{os.getpid()}-probe"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def _pids_in(netns: str) -> list[int]:
    found = _ip("netns", "pids", netns, check=False)
    return [int(p) for p in found.stdout.split()] if found.returncode == 0 else []


def _delete(netns: str) -> None:
    """Kill every process in ``netns`` (SIGKILL: a torn-down host has nowhere to flush to), then delete it."""
    for pid in _pids_in(netns):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _pids_in(netns) and time.monotonic() < deadline:
        time.sleep(0.05)
    _ip("netns", "del", netns, check=False)


def remove_stale() -> list[str]:
    """Delete the namespaces of runs whose process is gone (a kill -9 skips teardown); their names."""
    listed = _ip("netns", "list", check=False).stdout.split("\n")
    stale = []
    for line in listed:
        name = line.split(" ")[0]
        match = _NAME.match(name)
        if match and not os.path.exists(f"/proc/{match.group(1)}"):
            _delete(name)
            stale.append(name)
    return stale


@dataclass(frozen=True)
class Host:
    """One host: its namespace, its address, and its port on the switch."""

    name: str
    netns: str
    address: str
    port: str

    def exec(self) -> list[str]:
        """The command prefix that runs a program on this host."""
        return ["ip", "netns", "exec", self.netns]


@dataclass
class Network:
    """Hosts on one switch; :meth:`destroy` (or the context manager) removes every namespace and process."""

    owner: int = field(default_factory=os.getpid)
    hosts: dict[str, Host] = field(default_factory=dict)
    cuts: set[tuple[str, str]] = field(default_factory=set)

    @property
    def switch(self) -> str:
        return f"scl{self.owner}-switch"

    def create(self, names: Sequence[str]) -> Network:
        """Make the switch and one host per name (addresses ``.1``, ``.2``, ... in order)."""
        remove_stale()
        _ip("netns", "add", self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for index, name in enumerate(names, start=1):
            host = Host(name, f"scl{self.owner}-{name}", f"{SUBNET}.{index}", f"p-{name}")
            _ip("netns", "add", host.netns)
            self.hosts[name] = host
            _ip("-n", host.netns, "link", "set", "lo", "up")
            _ip("-n", host.netns, "link", "add", "eth0", "type", "veth", "peer", "name", host.port,
                "netns", self.switch)
            _ip("-n", self.switch, "link", "set", host.port, "master", "br0", "up")
            _ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
            _ip("-n", host.netns, "link", "set", "eth0", "up")
        return self

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *_: object) -> None:
        self.destroy()

    def destroy(self) -> None:
        """Every host's processes killed, every namespace deleted (the veths and the bridge go with them)."""
        for host in self.hosts.values():
            _delete(host.netns)
        _delete(self.switch)
        self.hosts.clear()
        self.cuts.clear()

    def namespaces(self) -> list[str]:
        """The namespaces this network holds now (empty once destroyed)."""
        mine = {h.netns for h in self.hosts.values()} | {self.switch}
        return [line.split(" ")[0] for line in _ip("netns", "list").stdout.splitlines()
                if line.split(" ")[0] in mine]

    # -- faults -----------------------------------------------------------------------

    def cut(self, source: str, targets: Iterable[str], *, both: bool = True) -> None:
        """Packets from ``source`` to each target are lost (and back, unless ``both`` is False)."""
        for target in targets:
            self._lose(source, target)
            if both:
                self._lose(target, source)

    def heal(self) -> None:
        """Every cut undone: the hosts learn each other's addresses again."""
        for source, target in sorted(self.cuts):
            _ip("-n", self.hosts[source].netns, "neigh", "del", self.hosts[target].address, "dev", "eth0",
                check=False)
        self.cuts.clear()

    def _lose(self, source: str, target: str) -> None:
        _ip("-n", self.hosts[source].netns, "neigh", "replace", self.hosts[target].address, "lladdr", NOBODY,
            "nud", "permanent", "dev", "eth0")
        self.cuts.add((source, target))

    def slow(self, name: str, rate: str, latency_ms: int) -> None:
        """Host ``name``'s link slowed to ``rate`` each way (``1mbit``), ``latency_ms`` of queue at most."""
        host = self.hosts[name]
        for netns, dev in ((host.netns, "eth0"), (self.switch, host.port)):
            subprocess.run(["tc", "-n", netns, "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate,
                            "burst", "16kb", "latency", f"{latency_ms}ms"], check=True, capture_output=True,
                           timeout=30)

    def fast(self, name: str) -> None:
        """Host ``name``'s link at full speed again."""
        host = self.hosts[name]
        for netns, dev in ((host.netns, "eth0"), (self.switch, host.port)):
            subprocess.run(["tc", "-n", netns, "qdisc", "del", "dev", dev, "root"], capture_output=True, timeout=30)
