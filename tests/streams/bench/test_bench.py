"""``scoreline bench`` end to end with tiny loads: every pipeline runs and the report has its shape.

No timing is asserted: the figures depend on the machine. The shape is the contract.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from scoreline.cli import main
from streams.bench.runner import ROUTING_PIPELINES, ratios

PERCENTILES = {"p50", "p95", "p99"}


@pytest.mark.kafka
@pytest.mark.parametrize(("layout", "processes"), [("pair", 2), ("single", 1)])
def test_bench_reports_every_pipeline_in_one_json_object(kafka_bootstrap, capsys, layout, processes):
    code = main(["bench", "--bootstrap", kafka_bootstrap, "--duration", "3", "--rounds", "3", "--load-seconds", "1",
                 "--rates", "50", "--window", "200", "--layout", layout, "--broker-warmup", "1", "--unloaded", "20",
                 "--json"])
    out = capsys.readouterr().out
    report = orjson.loads(out)  # exactly one JSON object on stdout

    assert code == 0, report
    assert {"cores", "python", "numpy", "aiokafka", "faust"} <= report["machine"].keys()
    assert "version" in report["broker"]
    assert report["method"]["layout"] == layout
    assert report["method"]["broker_warmup_s"] == 1
    for name in ROUTING_PIPELINES:
        figures = report[name]
        assert "error" not in figures, figures
        assert figures["throughput_rps"] > 0
        assert figures["unanswered"] == 0
        # The layout asked for is the one measured; `scoreline run` is one process (every role) in either.
        assert len(figures["cpu_share_by_process"]) == (1 if name == "scoreline_run" else processes)
        assert len(figures["rounds_rps"]) == 3 and all(r > 0 for r in figures["rounds_rps"])  # interleaved rounds
        assert figures["unloaded_ms"]["requests"] == 20 and figures["unloaded_ms"]["unanswered"] == 0
        assert PERCENTILES <= figures["unloaded_ms"].keys()
    for name in ROUTING_PIPELINES:  # the ceiling's too: the floor, unloaded and under each load
        latency = report[name]["latency_ms"]
        assert set(latency) == {"50", "half_max"}
        for load in latency.values():
            assert PERCENTILES <= load.keys()
            assert load.get("skipped") or load["unanswered"] == 0
            # The path users run is measured as they call it: each request a ScoreClient call.
            assert load.get("skipped") or (load.get("driver") == "ScoreClient") == (name == "scoreline_run")
    assert PERCENTILES <= report["raw_hop_ms"].keys() and report["raw_hop_ms"]["requests"] == 20
    ratios_ = report["ratios"]
    assert {"vs_ceiling", "vs_quix", "vs_faust", "vs_faust_take", "unloaded_p50_vs_ceiling",
            "unloaded_p99_vs_ceiling"} <= ratios_.keys()
    # The ratios are the report's own figures divided: a reader can recompute every one.
    mine = report["scoreline"]["throughput_rps"]
    for key, peer in (("vs_ceiling", "ceiling"), ("vs_quix", "quix"), ("vs_faust", "faust"),
                      ("vs_faust_take", "faust_take")):
        assert ratios_[key] == round(mine / report[peer]["throughput_rps"], 2)
    for p in ("p50", "p99"):
        assert ratios_[f"unloaded_{p}_vs_ceiling"] == round(
            report["scoreline"]["unloaded_ms"][p] / report["ceiling"]["unloaded_ms"][p], 2)
        assert ratios_[f"run_unloaded_{p}_vs_ceiling"] == round(
            report["scoreline_run"]["unloaded_ms"][p] / report["ceiling"]["unloaded_ms"][p], 2)
    assert ratios_["run_vs_ceiling"] == round(report["scoreline_run"]["throughput_rps"]
                                              / report["ceiling"]["throughput_rps"], 2)
    # Each round's ratio comes from that round's figures; the headline throughput is the median round's.
    assert len(report["rounds"]) == 3
    for i, round_ in enumerate(report["rounds"]):
        assert round_["vs_ceiling"] == round(report["scoreline"]["rounds_rps"][i] / report["ceiling"]["rounds_rps"][i],
                                             2)
    for name in ROUTING_PIPELINES:
        assert report[name]["throughput_rps"] == sorted(report[name]["rounds_rps"])[1]
    spread = ratios_["vs_ceiling_rounds"]
    assert spread == {"min": min(r["vs_ceiling"] for r in report["rounds"]),
                      "median": sorted(r["vs_ceiling"] for r in report["rounds"])[1],
                      "max": max(r["vs_ceiling"] for r in report["rounds"])}

    prefixes = tuple(report[name]["prefix"] for name in ROUTING_PIPELINES)
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



def test_ratios_are_scoreline_over_each_peer_and_over_the_floor_in_unloaded_latency():
    report = {"ceiling": {"throughput_rps": 1000.0, "unloaded_ms": {"p50": 2.0, "p99": 4.0}},
              "scoreline": {"throughput_rps": 600.0, "unloaded_ms": {"p50": 2.5, "p99": 5.0}},
              "quix": {"throughput_rps": 200.0}, "faust": {"throughput_rps": 60.0},
              "faust_take": {"throughput_rps": None}}
    assert ratios(report) == {"vs_ceiling": 0.6, "vs_quix": 3.0, "vs_faust": 10.0, "vs_faust_take": None,
                              "unloaded_p50_vs_ceiling": 1.25, "unloaded_p99_vs_ceiling": 1.25}


@pytest.mark.kafka
def test_a_model_bound_bench_reports_the_models_ceiling_and_each_pipeline_serving_it(
        kafka_bootstrap, capsys, reference_dir, tmp_path, monkeypatch):
    from streams.bench.model_ceiling import BATCHES
    from workflows.training.reference import BUILD

    home = tmp_path / "home"  # where `scoreline bench --model` finds the reference models: the session's build
    (home / "reference").mkdir(parents=True)
    (home / "reference" / f"build-{BUILD}").symlink_to(reference_dir)
    (reference_dir / ".built").write_text("complete\n")
    monkeypatch.setenv("SCORELINE_HOME", str(home))
    code = main(["bench", "--bootstrap", kafka_bootstrap, "--model", "retrieval-embedding", "--duration", "2",
                 "--rounds", "1", "--load-seconds", "1", "--window", "100", "--unloaded", "10", "--json"])
    combined = orjson.loads(capsys.readouterr().out)

    assert code == 0, combined
    report = combined["models"]["retrieval-embedding"]
    ceiling = report["model"]["ceiling"]
    assert set(ceiling["per_request_us"]) == {str(b) for b in BATCHES} and ceiling["ceiling_rps"] > 0
    loads = report["model"]["loads_rps"]
    assert list(loads) == ["25pct", "50pct", "75pct"] and loads["25pct"] < loads["50pct"] < loads["75pct"]
    for name in ("scoreline", "mlserver", "quix"):  # the same model, served by each pipeline
        assert "error" not in report[name], report[name]
        assert report[name]["throughput_rps"] > 0 and report[name]["unanswered"] == 0
        assert set(report[name]["latency_ms"]) == {str(v) for v in loads.values()}
    assert "ceiling" not in report and "faust" not in report  # they do not serve the model
    ratios_ = combined["ratios"]["model"]["retrieval-embedding"]
    assert set(ratios_) == {"vs_model_ceiling", "vs_mlserver", "vs_quix", "p99_at_50pct_vs_unloaded"}
    mine = report["scoreline"]["throughput_rps"]
    assert ratios_["vs_model_ceiling"] == round(mine / ceiling["ceiling_rps"], 3)
    assert ratios_["vs_quix"] == round(mine / report["quix"]["throughput_rps"], 2)
    assert ratios_["vs_mlserver"] == round(mine / report["mlserver"]["throughput_rps"], 2)
