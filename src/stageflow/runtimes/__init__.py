"""Runtimes run an environment's services. ``local`` is the embedded default."""
