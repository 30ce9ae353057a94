"""Shared pytest setup: real-server fixtures live in tests/support and are registered here."""

pytest_plugins = ["tests.support.postgres", "tests.support.redis", "tests.support.app", "tests.support.receiver"]
