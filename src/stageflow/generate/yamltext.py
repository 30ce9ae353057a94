"""YAML text for generated files (compose, GitHub Actions): key order kept, multi-line strings as blocks."""

from __future__ import annotations

from typing import Any


def dump_yaml(doc: Any, *, width: int, allow_unicode: bool = False) -> str:
    """``doc`` as block-style YAML; strings holding a newline become literal blocks (``|``)."""
    import yaml  # lazy: the CLI's start-up path must not pay for PyYAML

    class _Dumper(yaml.SafeDumper):
        pass

    def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        # Scripts (health checks, workflow steps) read best as literal blocks.
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, _str)
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=width,
                     allow_unicode=allow_unicode)
