"""``stageflow ci generate``: the app's GitHub Actions pipeline as data, dumped to YAML.

The workflow is built as a dict and serialised by PyYAML, so option values (branches, the Python
version) are YAML scalars and never workflow text. Hardening follows what actionlint and zizmor
check: read-only ``GITHUB_TOKEN`` by default, no persisted checkout credentials, no ``${{ }}``
expression inside a ``run:`` script (every value reaches the shell through ``env:``), third-party
actions pinned to a full commit SHA with the version as a comment (``pin=False`` is the documented
off switch, for organisations that pin through a proxy or Dependabot instead).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stageflow.errors import UsageError

STAGES: tuple[str, ...] = (
    "quality", "security", "build", "integration", "deploy-staging", "performance", "deploy-production", "cleanup",
)
#: What each stage waits for, in the full pipeline; dropped stages are bridged (see :func:`_needs`).
_NEEDS: dict[str, tuple[str, ...]] = {
    "quality": (),
    "security": ("quality",),
    "build": ("quality",),
    "integration": ("build",),
    "deploy-staging": ("security", "integration"),
    "performance": ("deploy-staging",),
    "deploy-production": ("performance",),
    "cleanup": ("deploy-production",),
}
_TITLES = {
    "quality": "1 · Code quality",
    "security": "2 · Security scan",
    "build": "3 · Build & test",
    "integration": "4 · Integration tests",
    "deploy-staging": "5 · Deploy {env}",
    "performance": "6 · Performance",
    "deploy-production": "7 · Deploy {env}",
    "cleanup": "8 · Cleanup",
}

#: action → (commit, version). Commits read from each action's repository tags.
PINS: dict[str, tuple[str, str]] = {
    "actions/checkout": ("3d3c42e5aac5ba805825da76410c181273ba90b1", "v7.0.1"),
    "actions/setup-python": ("5fda3b95a4ea91299a34e894583c3862153e4b97", "v7.0.0"),
    "actions/upload-artifact": ("bbbca2ddaa5d8feaa63e36b76fdaad77386f024f", "v7.0.0"),
    "docker/setup-buildx-action": ("37fe631027851001ddb9b187196cc803df7f5f0e", "v4.3.0"),
    "docker/build-push-action": ("53b7df96c91f9c12dcc8a07bcb9ccacbed38856a", "v7.3.0"),
    "aquasecurity/trivy-action": ("ed142fd0673e97e23eac54620cfb913e5ce36c25", "v0.36.0"),
    "grafana/setup-k6-action": ("db07bd9765aac508ef18982e52ab937fe633a065", "v1.2.1"),
}
_BRANCH = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/*-]{0,99}")
_PYTHON = re.compile(r"3\.\d{1,2}")
_SPEC = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\[\],<>=!~ -]{0,199}")
WORKFLOW_PATH = Path(".github") / "workflows" / "ci-cd.yml"
K6_PATH = Path(".github") / "k6" / "load-test.js"


@dataclass(frozen=True)
class WorkflowOptions:
    """What ``ci generate`` varies."""

    stages: tuple[str, ...] = STAGES
    python: str = "3.11"
    branches: tuple[str, ...] = ("main",)
    pin: bool = True
    coverage: float = 80.0
    stageflow_spec: str = "stageflow"
    #: The app's test command: ``manage.py test`` under coverage for a Django app, else pytest.
    django: bool = False
    #: The environments the two deploy stages deploy (``ProjectConfig.staging_env`` / ``production_env``)
    #: and their URLs for the GitHub environment (empty: not shown).
    staging_env: str | None = "staging"
    staging_url: str = ""
    production_env: str | None = "production"
    production_url: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """UsageError naming the first bad option."""
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise UsageError(f"--stages: unknown stage {unknown[0]!r}", hint=f"choose from {', '.join(STAGES)}")
        if not self.stages:
            raise UsageError("--stages: at least one stage is needed", hint=f"choose from {', '.join(STAGES)}")
        for stage, target, flag in (("deploy-staging", self.staging_env, "staging"),
                                    ("deploy-production", self.production_env, "production")):
            if stage in self.stages and target is None:
                raise UsageError(f"--stages: {stage} needs a {flag} environment, and stageflow.yml has none",
                                 hint=f"set environments.<env>.{flag}: true, or leave {stage} out")
        if not _PYTHON.fullmatch(self.python):
            raise UsageError(f"--python: {self.python!r} is not a Python version", hint="use a form like 3.11")
        for b in self.branches:
            if not _BRANCH.fullmatch(b) or ".." in b:
                raise UsageError(f"--branch: {b!r} is not a branch name", hint="letters, digits, '.', '_', '-', '/'")
        if not self.branches:
            raise UsageError("--branch: at least one branch is needed")
        if not 0 <= self.coverage <= 100:
            raise UsageError("--min-coverage: must be a percentage between 0 and 100")
        if not _SPEC.fullmatch(self.stageflow_spec):
            raise UsageError(f"--stageflow-spec: {self.stageflow_spec!r} is not a pip requirement")


def _uses(action: str, pin: bool) -> str:
    commit, version = PINS[action]
    return f"{action}@{commit}" if pin else f"{action}@{version.split('.')[0]}"


def _needs(stage: str, selected: tuple[str, ...]) -> list[str]:
    """Direct needs of ``stage`` among ``selected``: a dropped stage's own needs take its place."""
    out: list[str] = []
    todo = list(_NEEDS[stage])
    while todo:
        dep = todo.pop(0)
        if dep in selected:
            if dep not in out:
                out.append(dep)
        else:
            todo.extend(_NEEDS[dep])
    return out


class _Builder:
    def __init__(self, opts: WorkflowOptions) -> None:
        self.o = opts

    def checkout(self) -> dict[str, Any]:
        return {"uses": _uses("actions/checkout", self.o.pin), "with": {"persist-credentials": False}}

    def python(self) -> dict[str, Any]:
        # No pip cache: a cache written by a pull request's run could be restored by the run that
        # deploys (zizmor's cache-poisoning); installs cost seconds, a poisoned release far more.
        return {"uses": _uses("actions/setup-python", self.o.pin), "with": {"python-version": self.o.python}}

    def install_stageflow(self) -> dict[str, Any]:
        return {"name": "Install stageflow", "env": {"STAGEFLOW_SPEC": self.o.stageflow_spec},
                "run": 'python -m pip install "$STAGEFLOW_SPEC"'}

    def tests(self, label: str) -> list[dict[str, Any]]:
        cmd = "coverage run manage.py test" if self.o.django else "coverage run -m pytest"
        return [
            {"name": "Install the app and its test tools",
             "run": "python -m pip install -r requirements.txt coverage pytest"},
            {"name": label, "run": f"{cmd}\ncoverage xml\ncoverage report"},
        ]

    def job(self, stage: str, steps: list[dict[str, Any]], *, target: str = "", **extra: Any) -> dict[str, Any]:
        job: dict[str, Any] = {"name": _TITLES[stage].format(env=target), "runs-on": "ubuntu-latest"}
        needs = _needs(stage, self.o.stages)
        if needs:
            job["needs"] = needs
        job.update(extra)
        job["steps"] = steps
        return job

    def build(self) -> dict[str, Any]:
        o, pin = self.o, self.o.pin
        jobs: dict[str, Any] = {}
        deploy_if = ("github.event_name == 'push' && "
                     "github.ref == format('refs/heads/{0}', github.event.repository.default_branch)")
        if "quality" in o.stages:
            jobs["quality"] = self.job("quality", [
                self.checkout(), self.python(),
                {"name": "Install linters", "run": "python -m pip install ruff mypy"},
                {"name": "Lint", "run": "ruff check ."},
                {"name": "Format", "run": "ruff format --check ."},
                {"name": "Type check", "run": "mypy --ignore-missing-imports ."},
            ])
        if "security" in o.stages:
            jobs["security"] = self.job("security", [
                self.checkout(), self.python(),
                {"name": "Install scanners", "run": "python -m pip install pip-audit bandit"},
                {"name": "Dependencies (pip-audit)", "run": "pip-audit --strict -r requirements.txt"},
                {"name": "Code (bandit)", "run": "bandit -r . -x ./tests,./.venv -ll"},
                {"name": "File system (Trivy, the gate)", "uses": _uses("aquasecurity/trivy-action", pin),
                 "with": {"scan-type": "fs", "scan-ref": ".", "format": "table", "exit-code": "1",
                          "ignore-unfixed": True, "severity": "HIGH,CRITICAL"}},
                {"uses": _uses("docker/setup-buildx-action", pin)},
                {"name": "Build the image to scan", "uses": _uses("docker/build-push-action", pin),
                 "with": {"context": ".", "push": False, "load": True, "tags": "app:scan",
                          "cache-from": "type=gha", "cache-to": "type=gha,mode=max"}},
                {"name": "Image (Trivy, the gate)", "uses": _uses("aquasecurity/trivy-action", pin),
                 "with": {"scan-type": "image", "image-ref": "app:scan", "format": "table", "exit-code": "1",
                          "ignore-unfixed": True, "severity": "HIGH,CRITICAL"}},
            ])
        if "build" in o.stages:
            jobs["build"] = self.job("build", [
                self.checkout(),
                {"uses": _uses("docker/setup-buildx-action", pin)},
                {"name": "Build the image (layer cache)", "uses": _uses("docker/build-push-action", pin),
                 "with": {"context": ".", "push": False, "cache-from": "type=gha", "cache-to": "type=gha,mode=max"}},
                self.python(),
                *self.tests("Unit tests with coverage"),
                self.install_stageflow(),
                {"name": "Coverage gate", "env": {"MIN_COVERAGE": f"{o.coverage:g}"},
                 "run": 'stageflow gate --only coverage --coverage coverage.xml --min-coverage "$MIN_COVERAGE"'},
                {"name": "Keep the coverage report", "if": "always()", "uses": _uses("actions/upload-artifact", pin),
                 "with": {"name": "coverage", "path": "coverage.xml", "if-no-files-found": "ignore"}},
            ])
        if "integration" in o.stages:
            services = {
                "postgres": {
                    "image": "postgres:16",
                    # A throwaway database only this job's steps reach: no password to leak or to scan for.
                    "env": {"POSTGRES_USER": "app", "POSTGRES_DB": "app", "POSTGRES_HOST_AUTH_METHOD": "trust"},
                    "ports": ["5432:5432"],
                    "options": "--health-cmd pg_isready --health-interval 5s --health-timeout 5s --health-retries 10",
                },
                "redis": {
                    "image": "redis:7",
                    "ports": ["6379:6379"],
                    "options": '--health-cmd "redis-cli ping" --health-interval 5s --health-timeout 5s '
                               "--health-retries 10",
                },
            }
            env = {"DATABASE_URL": "postgres://app@127.0.0.1:5432/app", "REDIS_URL": "redis://127.0.0.1:6379/0"}
            jobs["integration"] = self.job("integration", [
                self.checkout(), self.python(), *self.tests("Integration tests (PostgreSQL, Redis)"),
            ], services=services, env=env)
        for stage, target, url in (("deploy-staging", o.staging_env, o.staging_url),
                                   ("deploy-production", o.production_env, o.production_url)):
            if stage not in o.stages or target is None:
                continue
            env_name = target
            environment: dict[str, Any] = {"name": env_name}
            if url:
                environment["url"] = url
            extra: dict[str, Any] = {"if": deploy_if, "environment": environment}
            if stage == "deploy-production":
                # Required reviewers are set on the GitHub environment; one production deploy at a time,
                # and a queued one waits rather than cancelling a deploy half-way.
                extra["concurrency"] = {"group": "deploy-production", "cancel-in-progress": False}
            jobs[stage] = self.job(stage, [
                {**self.checkout(), "with": {"persist-credentials": False, "fetch-depth": 0}},
                self.python(), self.install_stageflow(),
                {"name": f"Deploy {env_name}",
                 "env": {"SECRET_KEY": "${{ secrets.SECRET_KEY }}",
                         "POSTGRES_PASSWORD": "${{ secrets.POSTGRES_PASSWORD }}", "TARGET_ENV": env_name},
                 "run": 'stageflow config setup\nstageflow deploy "$TARGET_ENV" --yes'},
            ], target=env_name, **extra)
        if "performance" in o.stages:
            jobs["performance"] = self.job("performance", [
                self.checkout(),
                {"uses": _uses("grafana/setup-k6-action", pin)},
                {"name": "Load test (k6; thresholds from gates:)",
                 # Without a staging URL in stageflow.yml the script's own default (the first env's) applies.
                 **({"env": {"BASE_URL": o.staging_url}} if o.staging_url else {}),
                 "run": f"k6 run --summary-export k6-summary.json {K6_PATH.as_posix()}"},
                self.python(), self.install_stageflow(),
                {"name": "Performance gate", "run": "stageflow gate --only performance --loadtest k6-summary.json"},
                {"name": "Keep the load-test summary", "if": "always()", "uses": _uses("actions/upload-artifact", pin),
                 "with": {"name": "k6-summary", "path": "k6-summary.json", "if-no-files-found": "ignore"}},
            ], **{"if": deploy_if})
        if "cleanup" in o.stages:
            jobs["cleanup"] = self.job("cleanup", [
                self.checkout(), self.python(), self.install_stageflow(),
                {"name": "Remove old releases and backups", "run": "stageflow cleanup --keep 5"},
            ], **{"if": "always()"})
        jobs = {name: jobs[name] for name in STAGES if name in jobs}
        jobs["notify"] = self.notify(list(jobs))
        return {
            "name": "CI/CD",
            "on": {
                "push": {"branches": list(o.branches)},
                "pull_request": {"branches": list(o.branches)},
                "workflow_dispatch": {},
            },
            "permissions": {"contents": "read"},
            "concurrency": {"group": "ci-${{ github.workflow }}-${{ github.ref }}",
                            "cancel-in-progress": "${{ github.event_name == 'pull_request' }}"},
            "jobs": jobs,
        }

    def notify(self, needs: list[str]) -> dict[str, Any]:
        # The outcome reaches the script as environment variables; curl --fail-with-body makes the
        # step fail when Slack rejects the message (a wrong webhook must not go unnoticed).
        script = "\n".join([
            'if [ -z "$SLACK_WEBHOOK_URL" ]; then echo "SLACK_WEBHOOK_URL is not set"; exit 1; fi',
            'outcome=$(jq -r \'if any(.[]; .result == "failure") then "failed" '
            'elif any(.[]; .result == "cancelled") then "cancelled" else "succeeded" end\' <<<"$NEEDS")',
            'text="CI/CD ${outcome}: ${REPOSITORY}@${SHA:0:7} (${REF_NAME}) ${RUN_URL}"',
            'payload=$(jq -n --arg text "$text" \'{text: $text}\')',
            'curl --fail-with-body -sS -X POST -H "Content-Type: application/json" --data "$payload" '
            '"$SLACK_WEBHOOK_URL"',
        ])
        return {
            "name": "Notify Slack",
            "runs-on": "ubuntu-latest",
            "needs": needs,
            "if": "always() && github.event_name == 'push'",
            "environment": {"name": "notifications"},
            "steps": [{
                "name": "Post the outcome",
                "env": {
                    "SLACK_WEBHOOK_URL": "${{ secrets.SLACK_WEBHOOK_URL }}",
                    "NEEDS": "${{ toJSON(needs) }}",
                    "REPOSITORY": "${{ github.repository }}",
                    "SHA": "${{ github.sha }}",
                    "REF_NAME": "${{ github.ref_name }}",
                    "RUN_URL": "${{ github.server_url }}/${{ github.repository }}/actions/runs/${{ github.run_id }}",
                },
                "run": script,
            }],
        }


def render_workflow(opts: WorkflowOptions) -> str:
    """The workflow YAML for ``opts`` (validated first)."""
    from stageflow.generate.yamltext import dump_yaml

    opts.validate()
    doc = _Builder(opts).build()
    text = dump_yaml(doc, width=200, allow_unicode=True)
    # PyYAML quotes the key `on` (YAML 1.1 boolean); GitHub reads both, keep the familiar form.
    text = text.replace("\n'on':\n", "\non:\n", 1)
    if opts.pin:
        versions = {commit: version for commit, version in PINS.values()}
        lines = []
        for line in text.splitlines():
            m = re.search(r"@([0-9a-f]{40})$", line)
            lines.append(f"{line} # {versions[m.group(1)]}" if m and m.group(1) in versions else line)
        text = "\n".join(lines) + "\n"
    header = "# Generated by `stageflow ci generate`; edit the options and regenerate rather than this file.\n"
    return header + text
