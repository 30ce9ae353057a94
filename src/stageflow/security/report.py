"""Findings, scanner outcomes and the merged report of ``stageflow scan``: pure data and rendering.

A scanner either ran (its findings, possibly none), was skipped (with the reason: not installed,
nothing to scan, ``--skip``), or crashed (with the reason). A crash is never shown as "no
findings", and it fails the scan: a gate that could not look has not passed.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any, Literal

SEVERITIES: tuple[str, ...] = ("critical", "high", "medium", "low")
_RANK = {s: i for i, s in enumerate(SEVERITIES)}
Status = Literal["ran", "skipped", "crashed"]


def at_or_above(severity: str, level: str) -> bool:
    """True when ``severity`` is ``level`` or worse (critical > high > medium > low)."""
    return _RANK[severity] <= _RANK[level]


@dataclass(frozen=True)
class Finding:
    """One problem one scanner found."""

    scanner: str
    rule: str
    severity: str
    message: str
    location: str
    #: Stable across runs (no line number where the tool gives something steadier): what ``accept`` matches.
    id: str
    accepted: str | None = None
    expired: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class Outcome:
    """What one scanner did."""

    scanner: str
    what: str
    status: Status
    detail: str = ""
    findings: tuple[Finding, ...] = ()
    seconds: float = 0.0


@dataclass(frozen=True)
class AcceptRule:
    """An accepted finding (``security.accept`` in stageflow.yml)."""

    id: str
    reason: str
    expires: str


@dataclass
class ScanReport:
    """The merged report."""

    outcomes: list[Outcome] = field(default_factory=list)
    fail_on: str = "high"
    today: date = field(default_factory=date.today)

    @property
    def findings(self) -> list[Finding]:
        """Every finding, worst first."""
        out = [f for o in self.outcomes for f in o.findings]
        return sorted(out, key=lambda f: (_RANK[f.severity], f.scanner, f.location))

    @property
    def open_findings(self) -> list[Finding]:
        """Findings not (validly) accepted."""
        return [f for f in self.findings if f.accepted is None]

    @property
    def blocking(self) -> list[Finding]:
        """Open findings at or above ``fail_on``."""
        return [f for f in self.open_findings if at_or_above(f.severity, self.fail_on)]

    @property
    def crashed(self) -> list[Outcome]:
        """Scanners that failed to run."""
        return [o for o in self.outcomes if o.status == "crashed"]

    @property
    def failed(self) -> bool:
        """Exit 1: a blocking finding or a crashed scanner."""
        return bool(self.blocking or self.crashed)

    def counts(self) -> dict[str, int]:
        """Open findings per severity."""
        c = dict.fromkeys(SEVERITIES, 0)
        for f in self.open_findings:
            c[f.severity] += 1
        return c

    def as_dict(self) -> dict[str, Any]:
        """JSON form (what ``gate`` reads back)."""
        return {
            "fail_on": self.fail_on,
            "failed": self.failed,
            "counts": self.counts(),
            "scanners": [
                {"name": o.scanner, "what": o.what, "status": o.status, "detail": o.detail,
                 "findings": len(o.findings), "seconds": round(o.seconds, 2)}
                for o in self.outcomes
            ],
            "findings": [f.as_dict() for f in self.findings],
        }


def apply_acceptances(findings: Iterable[Finding], rules: Sequence[AcceptRule], today: date) -> list[Finding]:
    """Mark findings an unexpired rule accepts; an expired rule leaves them open and says so."""
    out = []
    for f in findings:
        for rule in rules:
            if rule.id == f.id or fnmatch.fnmatchcase(f.id, rule.id):
                if date.fromisoformat(rule.expires) >= today:
                    f = replace(f, accepted=f"{rule.reason} (until {rule.expires})")
                else:
                    f = replace(f, expired=f"acceptance expired on {rule.expires}: {rule.reason}")
                break
        out.append(f)
    return out


def render_json(report: ScanReport) -> str:
    """The report as JSON."""
    return json.dumps(report.as_dict(), indent=2) + "\n"


_SARIF_LEVEL = {"critical": "error", "high": "error", "medium": "warning", "low": "note"}


def render_sarif(report: ScanReport) -> str:
    """SARIF 2.1.0: one run per scanner that ran; accepted findings carry a suppression."""
    runs = []
    for o in report.outcomes:
        if o.status != "ran":
            continue
        results = []
        for f in o.findings:
            path, _, line = f.location.partition(":")
            loc: dict[str, Any] = {"physicalLocation": {"artifactLocation": {"uri": path}}}
            if line.isdigit():
                loc["physicalLocation"]["region"] = {"startLine": int(line)}
            result: dict[str, Any] = {
                "ruleId": f.rule, "level": _SARIF_LEVEL[f.severity], "message": {"text": f.message},
                "locations": [loc], "partialFingerprints": {"stageflow/v1": f.id},
                "properties": {"severity": f.severity},
            }
            if f.accepted:
                result["suppressions"] = [{"kind": "external", "justification": f.accepted}]
            results.append(result)
        runs.append({"tool": {"driver": {"name": o.scanner, "informationUri": "https://pypi.org/project/stageflow/"}},
                     "results": results})
    doc = {"$schema": "https://json.schemastore.org/sarif-2.1.0.json", "version": "2.1.0", "runs": runs}
    return json.dumps(doc, indent=2) + "\n"
