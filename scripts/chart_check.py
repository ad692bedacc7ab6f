"""Render the Helm chart with each values file and validate every object it makes.

    .venv/bin/python scripts/chart_check.py [--out build/chart] [--json]

Lints (``helm lint --strict``) and renders ``deploy/chart/scoreline`` with its default values and with
``values-production.yaml`` (``helm template``, the Helm that ``scripts/install_helm.sh`` pins)
into ``build/chart/default.yaml`` and ``build/chart/production.yaml``, then validates each
object: Kubernetes' own kinds against the Kubernetes OpenAPI schemas of ``KUBERNETES_VERSIONS``
(kubernetes-validate, strict: an unknown field is an error), KEDA's ScaledObject and
TriggerAuthentication against models generated from KEDA's CRDs, and the Prometheus Operator's
ServiceMonitor against models generated from its CRD (the cloudcoil model packages; an unknown
field is an error there too). Exit status 1 with every problem listed, 0 when all is valid.
Needs the ``chart`` extra (``pip install 'scoreline[chart]'``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "chart" / "scoreline"
VALUES = {"default": None, "production": CHART / "values-production.yaml"}
"""Each values set the chart is checked with: its name (the output file's) and its file (None: the chart's own)."""
KUBERNETES_VERSIONS = ("1.27.0", "1.37.0")
"""The Kubernetes versions every object is checked against: the oldest the chart supports (``kubeVersion`` in
Chart.yaml) and the newest kubernetes-validate ships."""
RELEASE = "scoreline"


def helm() -> str:
    """The pinned Helm's path, built on first use."""
    out = subprocess.run(["bash", str(ROOT / "scripts" / "install_helm.sh")], check=True, capture_output=True,
                         text=True)
    return out.stdout.strip().splitlines()[-1]


def render(values: Path | None, *extra: str) -> str:
    """``helm template`` of the chart with ``values`` (and ``--set`` style ``extra`` arguments)."""
    args = [helm(), "template", RELEASE, str(CHART), "--namespace", "scoring"]
    if values is not None:
        args += ["-f", str(values)]
    out = subprocess.run([*args, *extra], capture_output=True, text=True)
    if out.returncode != 0:
        raise ChartError(out.stderr.strip())
    return out.stdout


def lint(values: Path | None) -> list[str]:
    """``helm lint --strict`` of the chart with ``values``: its errors and warnings (INFO lines are advice)."""
    args = [helm(), "lint", "--strict", str(CHART)] + (["-f", str(values)] if values is not None else [])
    out = subprocess.run(args, capture_output=True, text=True)
    found = [line.strip() for line in (out.stdout + out.stderr).splitlines() if line.strip().startswith(("[ERROR]",
                                                                                                     "[WARNING]"))]
    return found or ([f"helm lint exited {out.returncode}"] if out.returncode else [])


class ChartError(Exception):
    """Helm refused to render (a ``fail`` in the chart, or a template error): its message."""


def objects(rendered: str) -> list[dict[str, Any]]:
    """The objects of a rendered chart, in order."""
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def _unknown_fields(given: Any, kept: Any, path: str = "") -> list[str]:
    """Fields of ``given`` that a model dropped on the way to ``kept`` (it ignores what it does not know)."""
    if isinstance(given, dict) and isinstance(kept, dict):
        out = []
        for key, value in given.items():
            if key not in kept:
                out.append(f"{path}.{key}".lstrip("."))
            else:
                out += _unknown_fields(value, kept[key], f"{path}.{key}")
        return out
    if isinstance(given, list) and isinstance(kept, list):
        return [p for i, (g, k) in enumerate(zip(given, kept)) for p in _unknown_fields(g, k, f"{path}[{i}]")]
    return []


def _crd_models() -> dict[tuple[str, str], Any]:
    from cloudcoil.models.keda.v1alpha1 import ScaledObject, TriggerAuthentication
    from cloudcoil.models.prometheus_operator.v1 import ServiceMonitor

    return {("keda.sh/v1alpha1", "ScaledObject"): ScaledObject,
            ("keda.sh/v1alpha1", "TriggerAuthentication"): TriggerAuthentication,
            ("monitoring.coreos.com/v1", "ServiceMonitor"): ServiceMonitor}


def validate(docs: list[dict[str, Any]]) -> list[str]:
    """Every problem with ``docs``, as ``Kind/name: what`` lines (empty: all valid)."""
    import kubernetes_validate
    import pydantic

    problems = []
    models = _crd_models()
    for doc in docs:
        where = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
        model = models.get((doc.get("apiVersion"), doc.get("kind")))
        if model is not None:
            try:
                kept = model.model_validate(doc).model_dump(by_alias=True, exclude_unset=True)
            except pydantic.ValidationError as exc:
                problems.append(f"{where}: {exc}")
                continue
            problems += [f"{where}: unknown field {f}" for f in _unknown_fields(doc, kept)]
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                problems.append(f"{where} (Kubernetes {version}): {exc.message} at "
                                f"{'.'.join(str(p) for p in exc.path)}")
            except kubernetes_validate.SchemaNotFoundError:
                problems.append(f"{where}: Kubernetes {version} has no {doc.get('apiVersion')} {doc.get('kind')}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "chart")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"kubernetes_versions": list(KUBERNETES_VERSIONS), "values": {}}
    failed = False
    for name, values in VALUES.items():
        try:
            rendered = render(values)
        except ChartError as exc:
            report["values"][name] = {"problems": [f"helm template: {exc}"]}
            failed = True
            continue
        path = args.out / f"{name}.yaml"
        path.write_text(rendered)
        docs = objects(rendered)
        problems = [f"helm lint: {p}" for p in lint(values)] + validate(docs)
        failed |= bool(problems)
        report["values"][name] = {"file": str(path), "objects": dict(Counter(d["kind"] for d in docs)),
                                  "problems": problems}
    if args.json:
        print(json.dumps(report))
    else:
        for name, part in report["values"].items():
            kinds = ", ".join(f"{n} {k}" for k, n in sorted(part.get("objects", {}).items()))
            verdict = "valid" if not part["problems"] else f"{len(part['problems'])} problems"
            print(f"{name}: {part.get('file', '-')}: {kinds}: {verdict}")
            for problem in part["problems"]:
                print(f"  {problem}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
