"""`runtime: compose` end to end on a real Docker Engine: the example app with PostgreSQL, Redis, nginx.

One stack per module (staging and production of one app, built once): `full` promotes one image,
a production deploy under constant load through nginx switches versions with zero failed requests,
a release failing its health check is rolled back with zero failed requests, `rollback` returns
to the previous image with the data intact, and the seed's recovery lines work on the stack.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.support.app import STAGEFLOW
from tests.support.docker import DockerImages, docker, docker_images  # noqa: F401
from tests.support.load import Load
from tests.support.stack import Stack, make_stack

pytestmark = pytest.mark.e2e

ENVS = ("staging", "production")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, docker_images: DockerImages) -> Iterator[Stack]:  # noqa: F811
    s = make_stack(tmp_path_factory.mktemp("compose"), docker_images, ENVS)
    yield s
    s.teardown()


def _image_ids(row: dict[str, Any]) -> set[str]:
    return {c["image_id"] for c in row["services"]["backend"]["containers"] if c["state"] == "running"}


def test_full_promotes_one_image_to_staging_and_production(stack: Stack) -> None:
    stack.sf("full", "--yes")
    st = stack.status()
    for env in ENVS:
        assert st[env]["healthy"], st[env]
        r = stack.get(env)
        assert r.status_code == 200 and r.json()["version"] == st[env]["release"]
        assert r.headers.get("x-content-type-options") == "nosniff"  # the hardened site serves the deploy
    assert st["staging"]["release"] == st["production"]["release"]
    ids = _image_ids(st["staging"])
    assert len(ids) == 1 and ids == _image_ids(st["production"])
    # The seed's recovery line, as written, against the deployed stack.
    ex = docker("compose", "-f", "docker-compose.prod.yml", "exec", "-T", "backend", "env", cwd=stack.root)
    assert ex.returncode == 0, ex.stderr
    assert "STAGEFLOW_ENV=production" in ex.stdout.splitlines()
    check = stack.sf("exec", "production", "--", "python", "manage.py", "check")
    assert "System check identified no issues" in check.stdout + check.stderr


def test_production_deploy_under_load_has_no_failed_request(stack: Stack) -> None:
    before = stack.get("production").json()["version"]
    (stack.root / "notes" / "marker.py").write_text("VERSION_MARK = 2\n")
    # A proxy setting changed since the first deploy reaches the served site with the next one.
    cfg = yaml.safe_load((stack.root / "stageflow.yml").read_text())
    cfg["environments"]["production"].setdefault("proxy", {})["csp"] = "default-src 'self'; img-src 'self' data:"
    (stack.root / "stageflow.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    stack.commit("a new version")
    with Load(stack.ports["production"], max_seconds=300) as load:
        stack.sf("deploy", "production", "--yes")
        time.sleep(1)
    r = stack.get("production")
    after = r.json()["version"]
    assert after != before
    assert load.failures == [] and load.ok > 20, (load.ok, load.failures[:5])
    assert r.headers["content-security-policy"] == "default-src 'self'; img-src 'self' data:"
    st = stack.status()["production"]
    assert st["release"] == after and st["healthy"]
    assert len(_image_ids(st)) == 1  # the old containers were drained and removed


def test_unhealthy_release_is_rolled_back_without_failed_requests(stack: Stack) -> None:
    good = stack.get("production").json()["version"]
    health = stack.root / "practika" / "health.py"
    health.write_text(health.read_text().replace("\nHEALTHY = True\n", "\nHEALTHY = False\n", 1))
    stack.commit("break health")
    with Load(stack.ports["production"], max_seconds=300) as load:
        proc = stack.sf("deploy", "production", "--yes", check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert load.failures == [] and load.ok > 5, (load.ok, load.failures[:5])
    assert stack.get("production").json()["version"] == good
    dep = stack.last_deployment("production")
    names = [s["name"] for s in dep["steps"]]
    assert dep["outcome"] == "failed" and "rollback" in names
    leftover = stack.web_containers("production")
    assert len(leftover) == 1, leftover  # the failed release's container is gone
    health.write_text(health.read_text().replace("\nHEALTHY = False\n", "\nHEALTHY = True\n", 1))
    stack.commit("fix health")


def test_rollback_returns_to_the_previous_image_and_keeps_rows(stack: Stack) -> None:
    current = stack.status()["production"]
    rows = stack.sf("exec", "production", "--", "python", "manage.py", "shell", "-c",
                    "from notes.models import Note; Note.objects.create(title='kept'); print(Note.objects.count())")
    count = int(rows.stdout.strip().splitlines()[-1])
    stack.sf("rollback", "production", "--yes")
    st = stack.status()["production"]
    assert st["release"] != current["release"] and st["healthy"]
    assert _image_ids(st) != _image_ids(current)
    again = stack.sf("exec", "production", "--", "python", "manage.py", "shell", "-c",
                     "from notes.models import Note; print(Note.objects.count())")
    assert int(again.stdout.strip().splitlines()[-1]) == count


def _notes(stack: Stack, code: str) -> str:
    out = stack.sf("exec", "production", "--", "python", "manage.py", "shell", "-c",
                   "from notes.models import Note; " + code).stdout
    return out.strip().splitlines()[-1]


def test_backup_restore_through_the_db_container_matches_exactly(stack: Stack) -> None:
    _notes(stack, "Note.objects.create(title='before the backup'); print('ok')")
    before = _notes(stack, "print(sorted(Note.objects.values_list('title', flat=True)))")
    created = stack.sf("backup", "create", "production")
    assert "sha256" in created.stdout + created.stderr
    _notes(stack, "Note.objects.create(title='after the backup'); print('ok')")
    assert "after the backup" in _notes(stack, "print(sorted(Note.objects.values_list('title', flat=True)))")
    stack.sf("backup", "restore", "production", "--yes")
    assert _notes(stack, "print(sorted(Note.objects.values_list('title', flat=True)))") == before
    verify = stack.sf("backup", "verify", "production")
    assert verify.returncode == 0


def test_kill_9_mid_deploy_next_deploy_recovers_without_stray_containers(stack: Stack) -> None:
    if not stack.status()["production"]["release"]:  # run on its own: something must serve first
        stack.sf("deploy", "production", "--yes")
    (stack.root / "notes" / "marker.py").write_text("VERSION_MARK = 3\n")
    stack.commit("another version")
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    proc = subprocess.Popen([str(STAGEFLOW), "deploy", "production", "--yes"], cwd=stack.root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # kill it once its new container exists
        names = stack.web_containers("production")
        if len(names) > 1 or proc.poll() is not None:
            break
        time.sleep(0.3)
    assert proc.poll() is None, "the deploy ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    with Load(stack.ports["production"], max_seconds=300) as load:
        stack.sf("deploy", "production", "--yes")
    assert load.failures == [], load.failures[:5]
    st = stack.status()["production"]
    assert st["healthy"] and st["mismatch"] is None
    names = stack.web_containers("production")
    assert len(names) == 1, names


def test_rolling_restart_and_logs(stack: Stack) -> None:
    before = stack.status()["production"]
    with Load(stack.ports["production"], max_seconds=300) as load:
        stack.sf("restart", "production", "--yes")
    assert load.failures == [] and load.ok > 5, (load.ok, load.failures[:5])
    after = stack.status()["production"]
    assert after["release"] == before["release"] and after["healthy"]
    assert _image_ids(after) == _image_ids(before)  # the same image, in new containers
    assert stack.web_containers("production") != [c["container"] for c in
                                                   before["services"]["backend"]["containers"]]
    logs = stack.sf("logs", "production", "backend", "--since", "10m", "-n", "20")
    assert "GET /health/" in logs.stdout + logs.stderr  # gunicorn's access log, through docker compose logs
