"""Hostile-input tests, one module per class of issue 7 (repository content and env values stay in place)."""
