"""Renderers for generated files (env files, compose, nginx, CI pipelines)."""
