"""scoreline's composition root: configuration and the ``scoreline`` command line.

The domain lives in the top-level packages: ``schemas`` (messages), ``routing`` (pure
routing decisions), ``workflows`` (model workflows) and ``streams`` (everything that
talks to Kafka). This package only wires them together.
"""

import os as _os
import sys as _sys

# Scoring runs on one thread per core (streams.scoring); a BLAS that also spreads each call over every
# core oversubscribes them (measured with the reference embedding model on 2 cores, two scoring threads:
# 387 us a request with one BLAS thread, 656 us with two). So one BLAS thread per call, unless the
# user set their own, and only where numpy is not loaded yet (its BLAS reads these once, at import).
if "numpy" not in _sys.modules:
    for _name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        _os.environ.setdefault(_name, "1")
