"""scripts/hot_path.py runs and reports its figures (shape only: no test asserts a time)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "hot_path.py"


def load():
    spec = importlib.util.spec_from_file_location("hot_path", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_hot_path_reports_per_request_figures_for_the_bench_mix():
    figures = await load().measure(batch=10, rounds=2, repeat=1)
    assert set(figures) == {"requests", "routed", "answered", "batch", "router_us", "worker_us",
                            "work_topic_wire_us", "headers_per_work_record"}
    # It measures the real path: every request routed once and answered once.
    assert figures["requests"] == figures["routed"] == figures["answered"] == 20
    assert all(figures[k] > 0 for k in ("router_us", "worker_us", "work_topic_wire_us", "headers_per_work_record"))
