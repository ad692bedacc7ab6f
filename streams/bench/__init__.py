"""``scoreline bench``: the pipeline measured beside a raw-aiokafka ceiling and a faust baseline.

Process layout (the same for every pipeline, so the comparison is fair): the pipeline under
test runs in child processes of its own, two by default (``--layout pair``: router | workers,
one relay hop each, two faust workers) or one (``--layout single``), the load generator in
another child process, and the bench process only orchestrates. Every pipeline gets its own
topic prefix, deleted afterwards.

Modules, one purpose each:

- :mod:`streams.bench.layout` -- the topics and rules one bench run uses.
- :mod:`streams.bench.mix` -- the request mix, pre-encoded so the load generator stays cheap.
- :mod:`streams.bench.loadgen` -- the load generator process: saturation and fixed-rate phases.
- :mod:`streams.bench.relay` -- the ceiling: a two-hop aiokafka relay with no routing or scoring.
- :mod:`streams.bench.scoreline_app` -- scoreline's own router and workers, as shipped.
- :mod:`streams.bench.faust_app` -- the faust-streaming baseline, per event or ``take`` batches.
- :mod:`streams.bench.runner` -- starts, measures and stops each pipeline; builds the report.
"""

# Nothing is imported here: each module also runs as ``python -m`` in its own process, and a
# package that imported it first would run it twice. The entry points are in streams.bench.runner.
__all__: list[str] = []
