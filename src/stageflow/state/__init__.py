"""SQLite state store: releases, deployments and their step journal, audit events, locks."""

from stageflow.state.store import Store

__all__ = ["Store"]
