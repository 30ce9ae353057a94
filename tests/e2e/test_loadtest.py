"""``stageflow loadtest ENV`` on apps deployed by the local runtime, and ``gate`` reading its summary."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.app import App, teardown_app
from tests.support.tiny import make_tiny


@pytest.fixture
def leaky(tmp_path: Path) -> Iterator[App]:
    """The tiny app under a load test of its leaking path."""
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        pytest.skip("nginx is not installed")
    app = make_tiny(tmp_path, watch="200ms", drain="1s", extra=(
        "loadtest: {rate: 25, duration: 3s, paths: [/leak/], concurrency: 5}\n"
        "gates: {memory_growth_mb: 40}\n"))
    yield app
    teardown_app(app)


def test_loadtest_staging_on_the_example_feeds_gate(practika: App) -> None:
    cfg = yaml.safe_load((practika.root / "stageflow.yml").read_text())
    cfg["loadtest"] = {"rate": 20, "duration": "4s", "paths": ["/health/", "/"]}
    (practika.root / "stageflow.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    practika.commit("load test settings")
    practika.sf("deploy", "staging")
    proc = practika.sf("loadtest", "staging", "--engine", "python", "--json")
    summary = json.loads(proc.stdout)
    saved = json.loads((practika.root / ".stageflow/reports/loadtest-staging.json").read_text())
    assert saved == summary
    assert summary["url"] == practika.url("staging", "")
    assert summary["requests"] == 80 and summary["errors"] == 0 and summary["dropped"] == 0
    assert summary["statuses"] == {"200": 80}
    lat = summary["latency"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"] < 5
    assert 3.5 < summary["duration_s"] < 15 and summary["throughput_rps"] > 5
    # Memory of the env's service, read through the local runtime: gunicorn and its two workers.
    memory = summary["memory"]
    assert list(memory) == ["backend"] and 30 < memory["backend"]["start_mb"] < 2000
    assert memory["backend"]["peak_mb"] >= max(memory["backend"]["start_mb"], memory["backend"]["end_mb"])
    assert (practika.root / summary["k6_script"]).read_text().count("constant-arrival-rate") == 1
    gate = practika.sf("gate", "--env", "staging", "--only", "performance", "--only", "memory", "--only", "health")
    assert [line.split()[:2] for line in gate.stdout.splitlines()[1:]] == [
        ["performance", "PASS"], ["memory", "PASS"], ["health", "PASS"]]
    text = practika.sf("loadtest", "staging", "--engine", "python", "--duration", "1s").stdout
    assert "20 requests" in text and "memory backend:" in text and "p95" in text


def test_memory_gate_catches_a_leaking_service(leaky: App) -> None:
    leaky.sf("deploy", "staging")
    summary = json.loads(leaky.sf("loadtest", "staging", "--json").stdout)
    assert summary["requests"] == 75 and summary["error_rate"] == 0
    mem = summary["memory"]["web"]
    assert mem["end_mb"] - mem["start_mb"] > 100  # 75 requests x 2 MB held
    gate = leaky.sf("gate", "--env", "staging", check=False)
    assert gate.returncode == 1, gate.stdout
    rows = {line.split()[0]: line for line in gate.stdout.splitlines()[1:]}
    assert "PASS" in rows["performance"] and "PASS" in rows["health"]
    assert "FAIL" in rows["memory"] and "web grew too much" in rows["memory"] and "bound 40 MB" in rows["memory"]
    assert gate.stderr.strip() == "error: gate failed: memory"


def test_loadtest_refuses_bad_input(leaky: App) -> None:
    bad = leaky.sf("loadtest", "staging", "--rate", "5000", check=False)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --rate: must be between 0 and 500")
    bad = leaky.sf("loadtest", "staging", "--duration", "soon", check=False)
    assert bad.returncode == 2 and "--duration:" in bad.stderr
    bad = leaky.sf("loadtest", "qa", check=False)
    assert bad.returncode == 2 and "unknown environment 'qa'" in bad.stderr
    # Nothing deployed: the load test says so in one line instead of reporting figures of nothing.
    down = leaky.sf("loadtest", "staging", "--duration", "1s", check=False)
    assert down.returncode == 1 and "Traceback" not in down.stderr
