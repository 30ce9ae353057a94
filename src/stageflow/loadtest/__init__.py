"""``stageflow loadtest ENV``: a bounded load test of an environment (k6 or the Python engine)."""
