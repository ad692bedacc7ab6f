"""On a real broker: a partition whose worker is five times slower receives measurably fewer keyless requests."""

from __future__ import annotations

import pytest
from keyless_scenario import run_keyless


@pytest.mark.kafka
async def test_a_slow_partition_receives_fewer_keyless_requests(kafka_bootstrap, kafka_admin, unique):
    prefix = f"t{unique}."
    try:
        run = await run_keyless(kafka_bootstrap, prefix, balance=True)
    finally:
        kafka_admin.created.extend(t for t in await kafka_admin.list_topics() if t.startswith(prefix))
    print(f"keyless requests on the slow partition: {run.slow_share:.1%} (fair share {run.fair_share:.0%}); "
          f"per partition {run.per_partition}")
    assert run.routed == run.sent  # every request routed, none lost to the balancing
    assert sum(run.per_partition) == run.sent
    # Evenly spread it would get a quarter; it can work off about a tenth of the offered load.
    assert run.slow_share < 0.75 * run.fair_share, run
    assert run.per_partition[0] < min(run.per_partition[1:]), run
