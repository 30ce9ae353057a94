"""Typed project configuration (``stageflow.yml``): models, loader and key-path errors."""

from stageflow.config.loader import PROJECT_FILE, EnvContext, load_env_context, load_project
from stageflow.config.models import Environment, ProjectConfig

__all__ = ["PROJECT_FILE", "EnvContext", "Environment", "ProjectConfig", "load_env_context", "load_project"]
