"""``scoreline bench`` end to end with tiny loads: every pipeline runs and the report has its shape.

No timing is asserted: the figures depend on the machine. The shape is the contract.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from scoreline.cli import main
from streams.bench.runner import PIPELINES, ratios

PERCENTILES = {"p50", "p95", "p99"}


@pytest.mark.kafka
@pytest.mark.parametrize(("layout", "processes"), [("pair", 2), ("single", 1)])
def test_bench_reports_every_pipeline_in_one_json_object(kafka_bootstrap, capsys, layout, processes):
    code = main(["bench", "--bootstrap", kafka_bootstrap, "--duration", "2", "--load-seconds", "1",
                 "--rates", "50", "--window", "200", "--layout", layout, "--broker-warmup", "1", "--json"])
    out = capsys.readouterr().out
    report = orjson.loads(out)  # exactly one JSON object on stdout

    assert code == 0, report
    assert {"cores", "python", "numpy", "aiokafka", "faust"} <= report["machine"].keys()
    assert "version" in report["broker"]
    assert report["method"]["layout"] == layout
    assert report["method"]["broker_warmup_s"] == 1
    for name in PIPELINES:
        figures = report[name]
        assert "error" not in figures, figures
        assert figures["throughput_rps"] > 0
        assert figures["unanswered"] == 0
        assert len(figures["cpu_share_by_process"]) == processes  # the layout asked for is the one measured
    assert "latency_ms" not in report["ceiling"]
    for name in ("scoreline", "faust", "faust_take"):
        latency = report[name]["latency_ms"]
        assert set(latency) == {"50", "half_max"}
        for load in latency.values():
            assert PERCENTILES <= load.keys()
            assert load.get("skipped") or load["unanswered"] == 0
    assert set(report["ratios"]) == {"vs_ceiling", "vs_faust", "vs_faust_take"}
    assert report["ratios"]["vs_ceiling"] > 0 and report["ratios"]["vs_faust"] > 0

    prefixes = tuple(report[name]["prefix"] for name in PIPELINES)
    assert asyncio.run(_wait_gone(kafka_bootstrap, prefixes)) == []


async def _wait_gone(bootstrap: str, prefixes: tuple[str, ...], timeout: float = 30.0) -> list[str]:
    """The bench's topics still listed once they are all gone or ``timeout`` passes (deletion is asynchronous)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = [t for t in await admin.list_topics() if t.startswith(prefixes)]
            if not left or loop.time() > deadline:
                return left
            await asyncio.sleep(0.2)
    finally:
        await admin.close()



def test_ratios_are_scoreline_over_each_peer():
    report = {"ceiling": {"throughput_rps": 1000.0}, "scoreline": {"throughput_rps": 600.0},
              "faust": {"throughput_rps": 60.0}, "faust_take": {"throughput_rps": None}}
    assert ratios(report) == {"vs_ceiling": 0.6, "vs_faust": 10.0, "vs_faust_take": None}
