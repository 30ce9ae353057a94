"""The rules between layers that docs/architecture.md states, checked on the imports of the source.

Each rule lists its known exceptions by module, so a new one is a decision (made here, and on the
architecture page), not an accident.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "src" / "stageflow"
#: Modules every layer may use: they import nothing above themselves.
FOUNDATION = {"errors", "masking", "fsutil", "procs", "runner", "commands", "state"}


def _layer(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports() -> dict[str, set[str]]:
    """Module (relative path) → the stageflow modules it imports (dotted, without the package)."""
    found: dict[str, set[str]] = {}
    for path in sorted(PKG.rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("stageflow."):
                names.add(node.module.removeprefix("stageflow."))
            elif isinstance(node, ast.Import):
                names |= {a.name.removeprefix("stageflow.") for a in node.names if a.name.startswith("stageflow.")}
        found[str(path.relative_to(PKG))] = names
    return found


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def test_the_foundation_imports_nothing_above_itself() -> None:
    bad = {mod: sorted(n for n in names if _top(n) not in FOUNDATION)
           for mod, names in _imports().items() if _layer(PKG / mod) in FOUNDATION}
    assert {m: n for m, n in bad.items() if n} == {}


def test_nothing_below_the_cli_imports_it() -> None:
    allowed = {"cli", "docgen"}  # docgen reads the Typer app to write the commands page
    bad = {mod: sorted(n for n in names if _top(n) == "cli")
           for mod, names in _imports().items() if _layer(PKG / mod) not in allowed}
    assert {m: n for m, n in bad.items() if n} == {}


def test_config_and_generate_stay_below_the_use_cases() -> None:
    # config/envfile.py reads and writes encrypted env files through configmgr.encryption: the one exception.
    exceptions = {"configmgr.encryption"}
    above = {"cli", "deploy", "monitor", "alerts", "security", "loadtest", "runtimes", "configmgr", "gate"}
    bad = {mod: sorted(n for n in names if _top(n) in above and n not in exceptions)
           for mod, names in _imports().items() if _layer(PKG / mod) in ("config", "generate")}
    assert {m: n for m, n in bad.items() if n} == {}


_SPAWNERS = ("system", "popen", "create_subprocess_exec", "create_subprocess_shell")


def _starts_processes(node: ast.AST) -> bool:
    if isinstance(node, ast.Import):
        return any(a.name == "subprocess" for a in node.names)
    if isinstance(node, ast.ImportFrom):
        return node.module == "subprocess"
    return isinstance(node, ast.Attribute) and node.attr in _SPAWNERS


def test_only_the_runner_and_the_runtimes_start_processes() -> None:
    # workspace.actor asks `git config user.name` once, with its own timeout: the one exception.
    allowed = {"runner.py", "workspace.py"}
    starters = set()
    for path in PKG.rglob("*.py"):
        rel = str(path.relative_to(PKG))
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if _starts_processes(node):
                starters.add(rel)
    assert {s for s in starters if s not in allowed and not s.startswith("runtimes/")} == set()


def test_argv_builders_run_nothing() -> None:
    imports = {mod: names for mod, names in _imports().items() if mod.startswith("commands/")}
    assert imports
    assert {m: sorted(n) for m, n in imports.items() if n - {"errors", "masking"}} == {}


#: The state store's tables (deploy side and monitor side): SQL naming one belongs in state/.
_STATE_TABLES = ("releases", "deployments", "steps", "events", "locks", "env_state", "backups", "alerts",
                 "alert_history", "outbox", "send_attempts", "samples", "samples_hourly", "log_cursors",
                 "monitor_leader", "monitor_meta")
_STATE_SQL = re.compile(r"\b(?:FROM|INTO|UPDATE|TABLE|JOIN)\s+(?:" + "|".join(_STATE_TABLES) + r")\b", re.I)


def _state_access(tree: ast.AST) -> list[str]:
    """What in a module reaches the state database itself: sqlite3, a store's connection, state SQL."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "sqlite3" for a in node.names):
            found.append(f"line {node.lineno}: import sqlite3")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "sqlite3":
            found.append(f"line {node.lineno}: from sqlite3")
        elif isinstance(node, ast.Attribute) and node.attr == "db":
            found.append(f"line {node.lineno}: .db (the store's connection)")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _STATE_SQL.search(node.value):
            found.append(f"line {node.lineno}: SQL on a state table")
    return found


def test_no_sql_on_the_state_outside_state() -> None:
    # deploy/backup.py backs up, restores and verifies the *app's* SQLite database (engine: sqlite) with
    # the sqlite3 module, as it runs pg_dump/psql for PostgreSQL: a database backend, never state.db.
    app_database = {"deploy/backup.py": ["import sqlite3"]}
    bad = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = str(path.relative_to(PKG))
        if rel.startswith("state/"):
            continue
        found = [f for f in _state_access(ast.parse(path.read_text()))
                 if not any(f.endswith(ok) for ok in app_database.get(rel, []))]
        if found:
            bad[rel] = found
    assert bad == {}


def test_the_state_access_check_sees_what_it_looks_for() -> None:
    # The check above must be able to fail: it finds the store's own SQL, and a caller's query.
    assert _state_access(ast.parse((PKG / "state" / "store.py").read_text()))
    caller = "import sqlite3\nrow = ws.store.db.execute('SELECT * FROM deployments WHERE id=?', (1,))\n"
    assert sorted(f.split(": ", 1)[1] for f in _state_access(ast.parse(caller))) == [
        ".db (the store's connection)", "SQL on a state table", "import sqlite3"]
