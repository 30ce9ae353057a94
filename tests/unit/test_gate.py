"""``stageflow gate``: each gate passes and fails on its figure; bad inputs are that gate's one-line failure."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from stageflow.gate import GateInputs, evaluate
from tests.support.app import STAGEFLOW


def coverage_xml(path: Path, percent: float) -> Path:
    path.write_text(
        f'<?xml version="1.0" ?>\n<coverage version="7.6" line-rate="{percent / 100:.4f}" branch-rate="0" '
        'lines-covered="1" lines-valid="1"><packages/></coverage>\n'
    )
    return path


def load_summary(path: Path, *, p95: float = 0.2, error_rate: float = 0.0, requests: int = 100,
                 memory: dict[str, tuple[float, float]] | None = None) -> Path:
    doc: dict[str, Any] = {
        "kind": "stageflow-loadtest", "requests": requests, "error_rate": error_rate,
        "latency": {"p50": p95 / 2, "p95": p95, "p99": p95 * 1.2, "max": p95 * 2, "mean": p95 / 2},
        "memory": None if memory is None else {
            s: {"start_mb": a, "end_mb": b, "peak_mb": b} for s, (a, b) in memory.items()},
    }
    path.write_text(json.dumps(doc))
    return path


def gate(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(STAGEFLOW), "gate", "--root", str(tmp_path), *args], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def status(results: list[Any], name: str) -> str:
    return next(r.status for r in results if r.name == name)


@pytest.mark.parametrize(("percent", "expected"), [(79.0, "fail"), (80.0, "pass"), (81.0, "pass")])
def test_coverage_gate_at_80(tmp_path: Path, percent: float, expected: str) -> None:
    res = evaluate(GateInputs(coverage_file=coverage_xml(tmp_path / "coverage.xml", percent), min_coverage=80),
                   only=["coverage"])
    assert [(r.status, r.detail) for r in res] == [
        (expected, f"{percent:.1f}% {'>=' if expected == 'pass' else '<'} 80%")]


def test_cli_fails_on_79_and_passes_on_81(tmp_path: Path) -> None:
    coverage_xml(tmp_path / "coverage.xml", 79)
    proc = gate(tmp_path, "--only", "coverage", "--min-coverage", "80")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "coverage  FAIL    79.0% < 80%" in proc.stdout
    assert proc.stderr.strip() == "error: gate failed: coverage"
    coverage_xml(tmp_path / "coverage.xml", 81)
    proc = gate(tmp_path, "--only", "coverage", "--min-coverage", "80", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [{"name": "coverage", "status": "pass", "detail": "81.0% >= 80%"}]


def test_performance_gate_fails_on_p95_of_2_5_seconds(tmp_path: Path) -> None:
    slow = load_summary(tmp_path / "slow.json", p95=2.5)
    res = evaluate(GateInputs(load_file=slow), only=["performance"])
    assert status(res, "performance") == "fail" and "p95 2.500s >= 2s" in res[0].detail
    fast = load_summary(tmp_path / "fast.json", p95=0.3)
    assert status(evaluate(GateInputs(load_file=fast), only=["performance"]), "performance") == "pass"
    errors = load_summary(tmp_path / "errors.json", p95=0.3, error_rate=0.02)
    res = evaluate(GateInputs(load_file=errors), only=["performance"])
    assert status(res, "performance") == "fail" and "error rate 2.00% >= 1%" in res[0].detail
    proc = gate(tmp_path, "--only", "performance", "--loadtest", str(slow))
    assert proc.returncode == 1 and "p95 2.500s >= 2s" in proc.stdout


def test_performance_gate_reads_k6_summary_export(tmp_path: Path) -> None:
    k6 = tmp_path / "k6.json"
    k6.write_text(json.dumps({"metrics": {
        "http_req_duration": {"avg": 120.0, "med": 100.0, "p(90)": 900.0, "p(95)": 2500.0, "max": 4000.0},
        "http_req_failed": {"passes": 0, "fails": 500, "value": 0.0},
        "http_reqs": {"count": 500, "rate": 10.0},
    }}))
    res = evaluate(GateInputs(load_file=k6), only=["performance"])
    assert status(res, "performance") == "fail" and "p95 2.500s" in res[0].detail
    # k6 knows nothing of memory: not run when not asked for, a failure when asked for.
    assert status(evaluate(GateInputs(load_file=k6)), "memory") == "skip"
    assert status(evaluate(GateInputs(load_file=k6), only=["memory"]), "memory") == "fail"


def test_memory_gate_fails_past_the_bound(tmp_path: Path) -> None:
    leak = load_summary(tmp_path / "leak.json", memory={"backend": (80.0, 260.0), "worker": (40.0, 41.0)})
    res = evaluate(GateInputs(load_file=leak, max_memory_growth_mb=100), only=["memory"])
    assert status(res, "memory") == "fail" and "backend grew too much" in res[0].detail
    steady = load_summary(tmp_path / "steady.json", memory={"backend": (80.0, 95.0)})
    res = evaluate(GateInputs(load_file=steady, max_memory_growth_mb=100), only=["memory"])
    assert status(res, "memory") == "pass" and "backend 80→95 MB (+15)" in res[0].detail
    empty = load_summary(tmp_path / "empty.json", memory={})
    assert status(evaluate(GateInputs(load_file=empty), only=["memory"]), "memory") == "fail"


def test_vulnerability_gate_reads_the_scan_report(tmp_path: Path) -> None:
    def report(findings: list[dict[str, Any]], scanners: list[dict[str, Any]] | None = None) -> Path:
        p = tmp_path / "scan.json"
        p.write_text(json.dumps({"findings": findings, "scanners": scanners or [{"name": "bandit", "status": "ran"}]}))
        return p

    high = {"id": "bandit:B602:app.py:3", "severity": "high", "accepted": None}
    low = {"id": "bandit:B101:app.py:9", "severity": "low", "accepted": None}
    res = evaluate(GateInputs(scan_file=report([high, low])), only=["vulnerabilities"])
    assert status(res, "vulnerabilities") == "fail"
    accepted = {**high, "accepted": "false positive (until 2099-01-01)"}
    assert status(evaluate(GateInputs(scan_file=report([accepted, low])), only=["vulnerabilities"]),
                  "vulnerabilities") == "pass"
    crashed = report([], [{"name": "pip-audit", "status": "crashed"}])
    res = evaluate(GateInputs(scan_file=crashed), only=["vulnerabilities"])
    assert status(res, "vulnerabilities") == "fail" and "pip-audit" in res[0].detail


def test_health_gate() -> None:
    ok = evaluate(GateInputs(), only=["health"], health=lambda: [("staging", True, "healthy")])
    assert [(r.status, r.detail) for r in ok] == [("pass", "staging healthy")]
    bad = evaluate(GateInputs(), only=["health"], health=lambda: [("staging", False, "HTTP 503 (expected 200)")])
    assert [(r.status, r.detail) for r in bad] == [("fail", "staging: HTTP 503 (expected 200)")]


@pytest.mark.parametrize("content", [
    "not xml at all",
    '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><coverage line-rate="0.9"/>',
    '<coverage line-rate="lots"/>',
    '<report line-rate="0.9"/>',
    '<coverage line-rate="7"/>',
])
def test_hostile_coverage_files_fail_that_gate_in_one_line(tmp_path: Path, content: str) -> None:
    (tmp_path / "coverage.xml").write_text(content)
    proc = gate(tmp_path, "--only", "coverage")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr + proc.stdout
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("coverage"))
    assert "FAIL" in line


def test_missing_inputs_skip_unless_named(tmp_path: Path) -> None:
    coverage_xml(tmp_path / "coverage.xml", 90)
    proc = gate(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "coverage         PASS" in proc.stdout and "performance      SKIP" in proc.stdout
    proc = gate(tmp_path, "--only", "performance")
    assert proc.returncode == 1 and "no input" in proc.stdout
    (tmp_path / "coverage.xml").unlink()
    proc = gate(tmp_path)
    assert proc.returncode == 1 and "nothing was checked" in proc.stderr
    proc = gate(tmp_path, "--only", "speed")
    assert proc.returncode == 2 and "--only: unknown gate 'speed'" in proc.stderr
