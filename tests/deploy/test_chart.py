"""The Helm chart, rendered by the pinned Helm: what an operator relies on in every values set.

``scripts/chart_check.py`` (``make chart-check``) validates the same renders against the
Kubernetes and KEDA schemas; these tests check what no schema knows: every role is there, no
role can get more replicas than its topic has partitions, the probes and the autoscaler point at
what scoreline really serves and names, and the chart refuses settings that would idle pods.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "tests" / "streams")]

import chart_check  # noqa: E402
from streams_testing import http_get  # noqa: E402

from routing import parse_rules  # noqa: E402
from scoreline.settings import EXAMPLES_DIR  # noqa: E402
from streams.ops.http import MetricsServer  # noqa: E402
from streams.services.pipeline import ROLES  # noqa: E402
from streams.topics import TopicLayout  # noqa: E402


@pytest.fixture(scope="module", params=sorted(chart_check.VALUES))
def rendered(request) -> tuple[str, list[dict[str, Any]]]:
    return request.param, chart_check.objects(chart_check.render(chart_check.VALUES[request.param]))


def _of(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _env(deployment: dict[str, Any]) -> dict[str, str]:
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", "") for e in container["env"]}


def _rules(docs: list[dict[str, Any]]):
    configs = _of(docs, "ConfigMap")
    if not configs:  # no rules in the values: the image's example rules
        return parse_rules(yaml.safe_load((EXAMPLES_DIR / "rules.json").read_text()))
    [config] = configs.values()
    return parse_rules(yaml.safe_load(config["data"]["rules.json"]))


def test_both_values_sets_render_and_validate(rendered):
    name, docs = rendered
    assert chart_check.validate(docs) == [], name


def test_every_role_is_there_with_a_worker_deployment_per_shard_of_the_rules(rendered):
    _, docs = rendered
    rules = _rules(docs)
    deployments = _of(docs, "Deployment").values()
    roles = sorted((d["spec"]["template"]["spec"]["containers"][0]["args"][2],
                    *d["spec"]["template"]["spec"]["containers"][0]["args"][4:5]) for d in deployments)
    assert sorted(set(r[0] for r in roles)) == sorted(ROLES)
    assert sorted(r[1] for r in roles if r[0] == "worker") == sorted(rules.shards)
    for d in deployments:  # each role's pods are guarded in a drain
        selector = d["spec"]["selector"]["matchLabels"]
        assert any(p["spec"]["selector"]["matchLabels"] == selector for p in _of(docs, "PodDisruptionBudget").values())


def test_no_role_gets_more_replicas_than_its_topic_has_partitions(rendered):
    _, docs = rendered
    deployments = _of(docs, "Deployment")
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s for s in _of(docs, "ScaledObject").values()}
    assert scaled, "the router and the workers scale with KEDA in both values sets"
    for name, d in deployments.items():
        env = _env(d)
        role = d["spec"]["template"]["spec"]["containers"][0]["args"][2]
        partitions = int(env["SCORELINE_REQUEST_PARTITIONS"] if role == "router" else
                         env["SCORELINE_SHARD_PARTITIONS"])
        if name in scaled:
            spec = scaled[name]["spec"]
            assert "replicas" not in d["spec"]  # KEDA owns the count; an upgrade must not reset it
            assert spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions
        else:
            assert d["spec"]["replicas"] <= (1 if role == "rollout" else partitions)


def test_the_autoscaler_reads_the_groups_and_topics_scoreline_uses(rendered):
    _, docs = rendered
    deployments = _of(docs, "Deployment")
    for so in _of(docs, "ScaledObject").values():
        d = deployments[so["spec"]["scaleTargetRef"]["name"]]
        env = _env(d)
        args = d["spec"]["template"]["spec"]["containers"][0]["args"]
        layout = TopicLayout(prefix=env["SCORELINE_TOPIC_PREFIX"])
        [kafka] = [t for t in so["spec"]["triggers"] if t["type"] == "kafka"]
        if args[2] == "router":
            group, topic = f"{layout.prefix}router", layout.requests
        else:
            group, topic = layout.worker_group(args[4]), layout.shard(args[4])
        assert (kafka["metadata"]["consumerGroup"], kafka["metadata"]["topic"]) == (group, topic)
        assert kafka["metadata"]["bootstrapServers"] == env["SCORELINE_BOOTSTRAP"]
        assert int(kafka["metadata"]["lagThreshold"]) > 0
        for prom in (t for t in so["spec"]["triggers"] if t["type"] == "prometheus"):
            assert f'group="{group}"' in prom["metadata"]["query"]
            assert "scoreline_work_in_flight_records" in prom["metadata"]["query"]


async def test_the_probes_point_at_endpoints_scoreline_serves(rendered):
    _, docs = rendered

    class Up:
        def exposition(self) -> bytes:
            return b""

        def health(self) -> tuple[bool, str]:
            return True, "ok"

        def readiness(self) -> tuple[bool, str]:
            return True, "ok"

    async with MetricsServer(Up(), port=0, host="127.0.0.1") as server:
        for d in _of(docs, "Deployment").values():
            [container] = d["spec"]["template"]["spec"]["containers"]
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert ports["metrics"] == int(_env(d)["SCORELINE_METRICS_PORT"])
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                get = container[probe]["httpGet"]
                assert get["port"] in ports
                status, _ = await http_get(server.port, get["path"])
                assert status == 200, (probe, get["path"])


def test_pods_run_as_non_root_on_a_read_only_filesystem_with_every_written_path_mounted(rendered):
    _, docs = rendered
    for d in _of(docs, "Deployment").values():
        pod = d["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        mounted = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/tmp", _env(d)["SCORELINE_HOME"]} <= mounted


def test_the_service_monitor_finds_the_metrics_service():
    docs = chart_check.objects(chart_check.render(chart_check.VALUES["production"]))
    [monitor] = _of(docs, "ServiceMonitor").values()
    [service] = _of(docs, "Service").values()
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}


@pytest.mark.parametrize(("setting", "message"), [
    ("roles.router.replicas=9", "router has 9 replicas but its topic scoreline.requests has 4 partitions"),
    ("config.shards={S_1}", "is not usable in a Kubernetes name"),
    ("kafka.sasl.mechanism=PLAIN", "kafka.sasl.existingSecret must name the Secret"),
])
def test_the_chart_refuses_settings_that_cannot_work(setting, message):
    with pytest.raises(chart_check.ChartError, match=message):
        chart_check.render(None, "--set", setting)
