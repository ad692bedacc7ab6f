"""docs/your-own-model.md, run as written: every ``sh`` block in order, in a directory outside the repository.

The only change made to the text is the topic prefix (``SCORELINE_TOPIC_PREFIX`` and the reply
topic in the rules), so the run has topics and consumer groups of its own on the session's broker.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "your-own-model.md"


def tutorial_script(prefix: str) -> str:
    blocks = re.findall(r"^```sh\n(.*?)^```", TUTORIAL.read_text(), flags=re.S | re.M)
    assert len(blocks) >= 8, "the tutorial lost its steps"
    body = "\n".join(blocks).replace('"scoreline.replies.app"', f'"{prefix}replies.app"')
    return f"set -euo pipefail\nexport SCORELINE_TOPIC_PREFIX={prefix}\n{body}"


def run_script(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the script in a session of its own; whatever it leaves running (a `scoreline run`) is stopped too."""
    proc = subprocess.Popen(["bash", "-c", script], cwd=cwd, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=420)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, None)


@pytest.mark.kafka
async def test_the_tutorial_serves_a_model_of_ones_own_and_shadows_its_second_version(kafka_bootstrap, kafka_admin,
                                                                                       tmp_path, unique):
    prefix = f"t{unique}."
    env = {k: v for k, v in os.environ.items()
           if k not in ("SCORELINE_RULES", "SCORELINE_MODELS_DIR", "SCORELINE_FACTS_DIR")}
    env.update(SCORELINE_BOOTSTRAP=kafka_bootstrap,
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    try:
        done = await asyncio.to_thread(run_script, tutorial_script(prefix), tmp_path, env)
    finally:
        kafka_admin.created.extend(t for t in await kafka_admin.list_topics() if t.startswith(prefix))
    project = tmp_path / "churn-project"
    run_log = (project / "run.log").read_text(errors="replace") if (project / "run.log").exists() else ""
    out = done.stdout
    assert done.returncode == 0, f"{out[-4000:]}\n--- run.log ---\n{run_log[-3000:]}"

    assert "churn@v1: valid; examples scored: 5 ok" in out and "churn@v2: valid; examples scored: 5 ok" in out
    assert "broken@v1: INVALID [model_unavailable]" in out and "validate says: broken (exit 1)" in out
    answer = json.loads((project / "answer.json").read_text())
    assert (answer["status"], answer["model"], answer["objective"]) == ("ok", "churn@v1", "churn")
    assert 0 <= answer["result"]["probability"] <= 1 and answer["result"]["band"] in ("low", "act")
    backfill = json.loads((project / "backfill.json").read_text())
    assert backfill["results"]["ok"] == 300 and backfill["unanswered"] == 0
    [pair] = json.loads((project / "report.json").read_text())["pairs"]
    assert (pair["primary"], pair["shadow"], pair["kind"]) == ("churn@v1", "churn@v2", "probability")
    assert pair["matched"] > 0
    broken = json.loads((project / "broken.json").read_text())
    assert broken["status"] == "error" and broken["error"]["code"] == "model_unavailable"
    assert "raised on import: ImportError: this model needs torch" in broken["error"]["message"]
    still_ok = json.loads((project / "still-ok.json").read_text())
    assert (still_ok["status"], still_ok["model"]) == ("ok", "churn@v1")
    # Both routed by the published rules, taken by the running pipeline without a restart.
    assert broken["rules_version"] == still_ok["rules_version"] >= 1
