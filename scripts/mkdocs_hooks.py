"""MkDocs hook: fill the generated reference pages from the code (see src/stageflow/docgen.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

KEYS_FILE = Path(__file__).resolve().parents[1] / "docs" / "reference" / "config-keys.yml"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace the reference markers with the configuration keys and the commands, as the code defines them."""
    from stageflow import docgen

    if docgen.CONFIG_MARKER in markdown:
        import yaml

        keys = yaml.safe_load(KEYS_FILE.read_text())
        markdown = markdown.replace(docgen.CONFIG_MARKER, docgen.config_reference(keys))
    if docgen.COMMANDS_MARKER in markdown:
        markdown = markdown.replace(docgen.COMMANDS_MARKER, docgen.commands_reference())
    return markdown
