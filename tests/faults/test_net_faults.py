"""Network faults between hosts of their own: a worker host cut off from every broker loses nothing.

The scenarios (``net_scenarios.py``) run from ``scripts/net_faults.py``, which builds seven
hosts as network namespaces (three brokers, router, two workers, the client) and tears them
down on exit. This test runs that command as a user does, for ``worker_cut_off`` once (the
other scenarios and three runs of each: ``python scripts/net_faults.py``, the table in
``docs/reliability.md``). It needs root and ``ip netns``: outside CI, a machine without them
skips it with the reason; in CI it fails instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from netns import _NAME, unavailable

pytestmark = [pytest.mark.kafka, pytest.mark.netfaults, pytest.mark.timeout(600)]

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "net_faults.py"


def _left_behind() -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30).stdout
    names = [line.split(" ")[0] for line in listed.splitlines()]
    return [n for n in names if (m := _NAME.match(n)) and not os.path.exists(f"/proc/{m.group(1)}")]


def test_a_worker_host_cut_off_from_every_broker_loses_nothing():
    reason = unavailable()
    if reason is not None:
        assert not os.environ.get("CI"), f"CI must run the network faults: {reason}"
        pytest.skip(reason)
    done = subprocess.run([sys.executable, str(SCRIPT), "--scenario", "worker_cut_off", "--runs", "1", "--json"],
                          capture_output=True, text=True, timeout=560)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout)
    assert [s["name"] for s in report["scenarios"]] == ["worker_cut_off"]
    [run] = report["scenarios"][0]["runs"]
    assert run["sent"] > 0 and run["lost"] == 0, run
    assert run["answered"] + run["dead_lettered"] >= run["sent"], run
    assert run["inconsistent"] == 0, run  # a duplicate is a replay: the same request id, the same model
    assert run["shadow_unpaired"] == 0, run
    assert not _left_behind(), "namespaces left behind"
