"""The generated reference pages against the code they describe, and the docs' runnable-block rules.

The configuration reference is generated from the dataclass sections (stageflow.docgen); here it is
compared with what pydantic itself accepts (its JSON schema of the same models), an independent walk,
so a key the generator missed or invented fails. Regenerating needs nothing: ``mkdocs build`` does it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from stageflow import docgen

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
KEYS_FILE = DOCS / "reference" / "config-keys.yml"
RUN_PAGES = (DOCS / "getting-started.md", DOCS / "operations" / "runbook.md")


def _schema_paths() -> dict[str, bool]:
    """Every key path pydantic accepts for stageflow.yml → whether it is required."""
    from pydantic import TypeAdapter

    from stageflow.config.models import ProjectConfig

    schema = TypeAdapter(ProjectConfig).json_schema()
    defs = schema.get("$defs", {})

    def deref(node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[1]]
        return node

    def objects(node: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """The sections a value may hold, with the path suffix that reaches their keys."""
        node = deref(node)
        found: list[tuple[str, dict[str, Any]]] = []
        for alt in node.get("anyOf", []):
            found += objects(alt)
        if "properties" in node:
            found.append(("", node))
        if isinstance(node.get("additionalProperties"), dict):
            found += [(".<name>" + s, o) for s, o in objects(node["additionalProperties"])]
        if isinstance(node.get("items"), dict):
            found += [("[]" + s, o) for s, o in objects(node["items"])]
        return found

    paths: dict[str, bool] = {}

    def walk(node: dict[str, Any], prefix: str) -> None:
        required = set(node.get("required", []))
        for name, sub in node["properties"].items():
            path = prefix + name
            paths[path] = name in required
            for suffix, obj in objects(sub):
                walk(obj, f"{path}{suffix}.")

    walk(schema, "")
    return paths


def _reference_rows() -> dict[str, str]:
    """Key path → default cell of the generated configuration reference."""
    text = docgen.config_reference(yaml.safe_load(KEYS_FILE.read_text()))
    rows = re.findall(r"^\| `([^`]+)` \| [^|]* \| ([^|]*) \|", text, flags=re.M)
    assert rows, text[:500]
    return dict(rows)


def test_configuration_reference_lists_exactly_the_keys_the_models_accept() -> None:
    accepted = _schema_paths()
    listed = _reference_rows()
    assert sorted(set(accepted) - set(listed)) == [], "keys stageflow accepts but the reference omits"
    assert sorted(set(listed) - set(accepted)) == [], "keys the reference lists but stageflow rejects"
    wrong = [p for p, req in accepted.items() if req != (listed[p] == "**required**")]
    assert wrong == [], f"required/default disagree for {wrong}"
    # every top-level key the example uses is on the page too (the example file points here)
    example = yaml.safe_load((REPO / "examples" / "practika" / "stageflow.yml").read_text())
    assert set(example) <= set(listed)


def test_every_key_has_a_description_and_no_description_is_stale() -> None:
    docs = yaml.safe_load(KEYS_FILE.read_text())
    missing = docgen.missing_docs(docs)
    assert missing == [], f"add these to {KEYS_FILE.relative_to(REPO)}: {missing}"
    stale = docgen.stale_docs(docs)
    assert stale == [], f"remove these from {KEYS_FILE.relative_to(REPO)} (no such key): {stale}"


def test_reference_renders_types_defaults_and_examples() -> None:
    text = docgen.config_reference(yaml.safe_load(KEYS_FILE.read_text()))
    row = next(line for line in text.splitlines() if line.startswith("| `services.<name>.health.deadline`"))
    assert "| duration | `60s` |" in row
    row = next(line for line in text.splitlines() if line.startswith("| `environments.<name>.url`"))
    assert "**required**" in row and "`http://127.0.0.1:8001`" in row
    row = next(line for line in text.splitlines() if line.startswith("| `database.engine`"))
    assert "one of postgres, sqlite, none" in row and "`sqlite`" in row


def _cli_paths() -> set[str]:
    """Every command path the Typer app registers, walked from Typer's own registrations."""
    from stageflow.cli.main import app

    found: set[str] = set()

    def walk(typer_app: Any, prefix: str) -> None:
        for cmd in typer_app.registered_commands:
            name = cmd.name or cmd.callback.__name__.replace("_", "-")
            found.add(f"{prefix} {name}")
        for group in typer_app.registered_groups:
            found.add(f"{prefix} {group.name}")
            walk(group.typer_instance, f"{prefix} {group.name}")

    walk(app, "stageflow")
    return found


def test_commands_page_lists_every_command_with_its_options() -> None:
    text = docgen.commands_reference()
    headings = set(re.findall(r"^#+ `(stageflow [^`]+)`", text, flags=re.M))
    assert headings == _cli_paths()
    deploy = text.split("## `stageflow deploy`", 1)[1].split("\n## ", 1)[0]
    assert "stageflow deploy [OPTIONS] ENV" in deploy
    for option in ("--dry-run", "--skip-check", "--yes, -y", "--root"):
        assert f"`{option}`" in deploy


def test_reference_pages_carry_the_markers_the_build_fills() -> None:
    assert docgen.CONFIG_MARKER in (DOCS / "reference" / "configuration.md").read_text()
    assert docgen.COMMANDS_MARKER in (DOCS / "reference" / "commands.md").read_text()
    hook = (REPO / "scripts" / "mkdocs_hooks.py").read_text()
    assert "config_reference" in hook and "commands_reference" in hook


BLOCK = re.compile(r"(?:<!-- (?P<mark>[^>]*?) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)```", re.S)


@pytest.mark.parametrize("page", RUN_PAGES, ids=lambda p: p.name)
def test_every_command_block_is_run_or_names_the_test_that_runs_it(page: Path) -> None:
    blocks = list(BLOCK.finditer(page.read_text()))
    shell = [b for b in blocks if b["lang"] in ("bash", "sh", "shell", "console")]
    assert shell
    for b in shell:
        mark = b["mark"] or ""
        assert mark == "run" or mark.startswith("covered-by: "), f"{page.name}: unmarked block:\n{b['body']}"
        if mark.startswith("covered-by: "):
            target = mark.removeprefix("covered-by: ")
            file, _, name = target.partition("::")
            assert re.search(rf"^def {re.escape(name)}\(", (REPO / file).read_text(), flags=re.M), target


YAML_BLOCK = re.compile(r"```yaml\n(?P<body>.*?)```", re.S)
PAGES = (REPO / "README.md", *sorted(DOCS.rglob("*.md")))


def _whole_configs() -> list[tuple[str, str]]:
    """Every ```yaml block of the README and the docs that is a whole stageflow.yml (it names the project)."""
    found = []
    for page in PAGES:
        for m in YAML_BLOCK.finditer(page.read_text()):
            if re.search(r"^project: ", m["body"], flags=re.M):
                found.append((f"{page.relative_to(REPO)}:{page.read_text()[:m.start()].count(chr(10)) + 1}", m["body"]))
    return found


@pytest.mark.parametrize(("where", "body"), _whole_configs(), ids=[w for w, _ in _whole_configs()])
def test_every_stageflow_yml_shown_in_the_docs_is_accepted(where: str, body: str, tmp_path: Path) -> None:
    from stageflow.config.loader import load_project

    (tmp_path / "stageflow.yml").write_text(body)
    config = load_project(tmp_path)  # raises ConfigError naming the key when a page shows a bad file
    assert config.project and config.environments, where


def test_the_readme_and_getting_started_show_whole_configs() -> None:
    where = {w.split(":", 1)[0] for w, _ in _whole_configs()}
    assert {"README.md", "docs/getting-started.md"} <= where
