"""stageflow: take a containerised web app from a commit to production and keep it healthy."""

__version__ = "0.1.0"
