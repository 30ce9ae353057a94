"""Configuration manager: env-file templates, secrets, encryption at rest and validation.

Public API (what the CLI and the deploy pre-flight use):

* :func:`setup_envs` / :func:`generate_env` — create or update env files from templates;
* :func:`validate_environment` → :class:`ValidationReport` (``.errors``, ``.warnings``, ``.ok``);
* :func:`generate_secret` — CSPRNG secrets by kind (``django``, ``password``, ``token``, ``hex``).
"""

from stageflow.configmgr.generate import GenerateResult, KeyOutcome, SetupResult, generate_env, setup_envs
from stageflow.configmgr.secrets import generate_secret
from stageflow.configmgr.validation import ValidationItem, ValidationReport, validate_environment

__all__ = [
    "GenerateResult",
    "KeyOutcome",
    "SetupResult",
    "ValidationItem",
    "ValidationReport",
    "generate_env",
    "generate_secret",
    "setup_envs",
    "validate_environment",
]
