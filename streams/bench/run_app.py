"""``scoreline run`` as a user starts it, for the bench: every role, the shipped example rules, shadowing on.

Run as ``python -m streams.bench.run_app BOOTSTRAP PREFIX``: it writes the example rules with the
reply topics under ``PREFIX`` to a file and replaces itself with ``python -m scoreline run
--bootstrap BOOTSTRAP --prefix PREFIX --rules FILE --metrics-port 0``, so the process the bench
measures and stops (SIGTERM) is ``scoreline run``'s own: the router, a worker per shard, the
shadow worker, the comparator and the rollout controller, as the README starts them. Only the
metrics port differs (none: several pipelines share the machine). Unlike the bench's ``scoreline``
pipeline, the rules keep their shadow candidates: this is the path users run, shadow work included.
"""

from __future__ import annotations

import os
import sys
import tempfile

import orjson

from streams.bench.layout import bench_rules_doc

__all__ = ["main"]


def main(bootstrap: str, prefix: str) -> None:
    handle, rules = tempfile.mkstemp(prefix="scoreline-bench-run-", suffix=".json")
    with os.fdopen(handle, "wb") as out:
        out.write(orjson.dumps(bench_rules_doc(prefix, shadow=True)))
    os.execv(sys.executable, [sys.executable, "-m", "scoreline", "run", "--bootstrap", bootstrap, "--prefix", prefix,
                              "--rules", rules, "--metrics-port", "0"])


if __name__ == "__main__":
    main(*sys.argv[1:3])
