"""``stageflow gate``: the quality gates as one command, each pass/fail with its figure.

Gates read files other steps wrote (``coverage.xml``, the scan report, a load-test summary from
stageflow's engine or k6's ``--summary-export``) and, for health, the live environment. Inputs are
untrusted: a malformed file is that gate's failure with a one-line reason, never a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from stageflow.errors import UsageError

GATES: tuple[str, ...] = ("coverage", "vulnerabilities", "performance", "memory", "health")
_MAX_INPUT = 50 * 1024 * 1024


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict: passed, failed, or not run (its input is absent)."""

    name: str
    status: str  # "pass" | "fail" | "skip"
    detail: str

    def as_dict(self) -> dict[str, str]:
        """JSON form."""
        return {"name": self.name, "status": self.status, "detail": self.detail}


@dataclass(frozen=True)
class GateInputs:
    """Where each gate's figure comes from, and the thresholds."""

    coverage_file: Path | None = None
    scan_file: Path | None = None
    load_file: Path | None = None
    min_coverage: float = 80.0
    vulnerability_level: str = "high"
    max_p95: float = 2.0
    max_error_rate: float = 1.0
    max_memory_growth_mb: float = 100.0


class _BadInput(Exception):
    pass


def _read(path: Path) -> bytes:
    try:
        if path.stat().st_size > _MAX_INPUT:
            raise _BadInput(f"{path} is larger than {_MAX_INPUT // 2**20} MB")
        return path.read_bytes()
    except OSError as exc:
        raise _BadInput(f"cannot read {path}: {exc.strerror}") from None


def coverage_percent(path: Path) -> float:
    """Line coverage from a Cobertura ``coverage.xml`` (coverage.py's ``coverage xml``), in percent."""
    import xml.etree.ElementTree as ET  # coverage.xml holds no DTD; entities are refused below

    data = _read(path)
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise _BadInput(f"{path}: DTDs and entities are not accepted")
    try:
        root = ET.fromstring(data)  # noqa: S314
    except ET.ParseError as exc:
        raise _BadInput(f"{path}: not valid XML ({exc})") from None
    rate = root.get("line-rate")
    if root.tag != "coverage" or rate is None:
        raise _BadInput(f"{path}: not a Cobertura coverage report (no <coverage line-rate=...>)")
    try:
        value = float(rate) * 100
    except ValueError:
        raise _BadInput(f"{path}: line-rate {rate!r} is not a number") from None
    if not 0 <= value <= 100:
        raise _BadInput(f"{path}: line-rate {rate!r} is out of range")
    return value


def _json(path: Path) -> Any:
    try:
        return json.loads(_read(path))
    except ValueError:
        raise _BadInput(f"{path}: not valid JSON") from None


@dataclass(frozen=True)
class LoadFigures:
    """What the performance and memory gates read from a load-test summary."""

    p95: float
    error_rate: float
    requests: int
    memory: dict[str, tuple[float, float]] | None  # service → (start MB, end MB)


def load_figures(path: Path) -> LoadFigures:
    """Read stageflow's load summary or k6's ``--summary-export`` JSON."""
    doc = _json(path)
    if not isinstance(doc, dict):
        raise _BadInput(f"{path}: expected a JSON object")
    try:
        if doc.get("kind") == "stageflow-loadtest":
            lat = doc["latency"]
            mem = {name: (float(m["start_mb"]), float(m["end_mb"])) for name, m in (doc.get("memory") or {}).items()}
            return LoadFigures(float(lat["p95"]), float(doc["error_rate"]) * 100, int(doc["requests"]),
                               mem if doc.get("memory") is not None else None)
        metrics = doc["metrics"]
        duration = metrics["http_req_duration"]
        failed = metrics["http_req_failed"]
        # k6 reports milliseconds; its Rate metrics carry the fraction in "value" (or "rate" in newer exports).
        rate = failed.get("value", failed.get("rate"))
        count = metrics.get("http_reqs", {}).get("count", 0)
        return LoadFigures(float(duration["p(95)"]) / 1000, float(rate) * 100, int(count), None)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _BadInput(f"{path}: not a stageflow or k6 load-test summary (missing {exc})") from None


def _guard(name: str, fn: Callable[[], GateResult]) -> GateResult:
    try:
        return fn()
    except _BadInput as exc:
        return GateResult(name, "fail", str(exc))


def evaluate(inputs: GateInputs, *, only: Sequence[str] = (),
             health: Callable[[], list[tuple[str, bool, str]]] | None = None) -> list[GateResult]:
    """Every gate (or ``only`` those, which then must have their input) → its result."""
    for name in only:
        if name not in GATES:
            raise UsageError(f"--only: unknown gate {name!r}", hint=f"choose from {', '.join(GATES)}")
    selected = [g for g in GATES if not only or g in only]
    required = set(only)
    out = []

    def missing(name: str, what: str) -> GateResult:
        status = "fail" if name in required else "skip"
        return GateResult(name, status, f"no input: {what}")

    for name in selected:
        if name == "coverage":
            f = inputs.coverage_file
            if f is None or not f.exists():
                out.append(missing(name, f"{f or 'coverage.xml'} not found (run the tests under coverage, "
                                         "then `coverage xml`)"))
                continue

            out.append(_guard(name, partial(_coverage, f, inputs.min_coverage)))
        elif name == "vulnerabilities":
            f = inputs.scan_file
            if f is None or not f.exists():
                out.append(missing(name, f"{f or 'scan report'} not found (run `stageflow scan`)"))
                continue
            out.append(_guard(name, partial(_vulns, f, inputs.vulnerability_level)))
        elif name in ("performance", "memory"):
            f = inputs.load_file
            if f is None or not f.exists():
                out.append(missing(name, f"{f or 'load-test summary'} not found (run `stageflow loadtest ENV`)"))
                continue
            out.append(_guard(name, partial(_load, name, f, inputs, name in required)))
        elif name == "health":
            if health is None:
                out.append(missing(name, "no environment given (--env ENV)"))
                continue
            rows = health()
            bad = [f"{env}: {why}" for env, ok, why in rows if not ok]
            if bad:
                out.append(GateResult(name, "fail", "; ".join(bad)))
            else:
                out.append(GateResult(name, "pass", ", ".join(f"{env} healthy" for env, _, _ in rows)))
    return out


def _coverage(path: Path, minimum: float) -> GateResult:
    pct = coverage_percent(path)
    ok = pct >= minimum
    return GateResult("coverage", "pass" if ok else "fail", f"{pct:.1f}% {'>=' if ok else '<'} {minimum:g}%")


def _vulns(path: Path, level: str) -> GateResult:
    from stageflow.security.report import SEVERITIES, at_or_above

    doc = _json(path)
    try:
        findings = [f for f in doc["findings"] if f.get("accepted") is None]
        crashed = [s["name"] for s in doc["scanners"] if s["status"] == "crashed"]
        bad = [f for f in findings if f["severity"] in SEVERITIES and at_or_above(f["severity"], level)]
    except (KeyError, TypeError, AttributeError):
        raise _BadInput(f"{path}: not a `stageflow scan --format json` report") from None
    if crashed:
        return GateResult("vulnerabilities", "fail", f"scanner(s) crashed, so nothing is proven: {', '.join(crashed)}")
    if bad:
        worst = bad[0]
        return GateResult("vulnerabilities", "fail",
                          f"{len(bad)} open finding(s) at or above {level} (e.g. {worst['severity']} {worst['id']})")
    return GateResult("vulnerabilities", "pass", f"0 open findings at or above {level} ({len(findings)} below)")


def _load(name: str, path: Path, inputs: GateInputs, required: bool) -> GateResult:
    fig = load_figures(path)
    if name == "performance":
        problems = []
        if fig.requests <= 0:
            return GateResult(name, "fail", "the load test made no requests")
        if fig.p95 >= inputs.max_p95:
            problems.append(f"p95 {fig.p95:.3f}s >= {inputs.max_p95:g}s")
        if fig.error_rate >= inputs.max_error_rate:
            problems.append(f"error rate {fig.error_rate:.2f}% >= {inputs.max_error_rate:g}%")
        detail = (f"p95 {fig.p95:.3f}s (< {inputs.max_p95:g}s), "
                  f"errors {fig.error_rate:.2f}% (< {inputs.max_error_rate:g}%)")
        return GateResult(name, "fail" if problems else "pass", "; ".join(problems) if problems else detail)
    if fig.memory is None:
        return GateResult(name, "fail" if required else "skip",
                          "the summary has no memory figures (k6 does not read them)")
    if not fig.memory:
        return GateResult(name, "fail", "no service memory was read during the load test")
    grew = {svc: end - start for svc, (start, end) in fig.memory.items()}
    worst = max(grew, key=lambda s: grew[s])
    ok = grew[worst] < inputs.max_memory_growth_mb
    text = ", ".join(f"{svc} {fig.memory[svc][0]:.0f}→{fig.memory[svc][1]:.0f} MB ({grew[svc]:+.0f})" for svc in grew)
    return GateResult(name, "pass" if ok else "fail",
                      f"{text}; bound {inputs.max_memory_growth_mb:g} MB" + ("" if ok else f": {worst} grew too much"))
