"""Training scripts for the example models: synthetic data from a documented
generative process with a fixed seed, numpy-only training, packages and facts
written under ``examples/``. Run ``python -m workflows.training.title_ranking
--out scoreline/examples/`` and ``python -m workflows.training.fraud_score --out scoreline/examples/``."""
