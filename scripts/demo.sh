#!/usr/bin/env bash
# The main job, end to end on the local runtime (no Docker): copy the Practika example into a scratch
# git repository, prepare each environment's variables, promote one release dev → staging → production,
# then show the status. Usage: scripts/demo.sh [--runtime compose] [SCRATCH_DIR]   (default /tmp/stageflow-demo)
# --runtime compose: staging and production run as Docker Compose stacks (PostgreSQL, Redis, nginx) on the
# local Docker Engine, prepared by scripts/docker-env.sh (engine, Compose v2, images built from Debian).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runtime=local
if [ "${1:-}" = "--runtime" ]; then runtime="${2:?--runtime needs local or compose}"; shift 2; fi
case "$runtime" in local|compose) ;; *) echo "demo: --runtime local|compose" >&2; exit 2;; esac
"$here/scripts/bootstrap.sh"
demo="${1:-${TMPDIR:-/tmp}/stageflow-demo}"
sf="$here/.venv/bin/stageflow"

if [ -d "$demo/.stageflow" ]; then
  # A previous demo may still be running: stop its services before starting afresh.
  for env in dev staging production; do (cd "$demo" && "$sf" down "$env" >/dev/null 2>&1) || true; done
fi
rm -rf "$demo"
mkdir -p "$demo"
cp -r "$here/examples/practika/." "$demo/"
mkdir -p "$demo/scripts"
cp "$here"/scripts/{workflow-orchestrator,monitoring-system,config-manager,_stageflow}.sh "$demo/scripts/" 2>/dev/null || true
# The copied wrappers find this checkout's stageflow without STAGEFLOW being set.
sed -i "1a : \"\${STAGEFLOW:=$sf}\"" "$demo/scripts/_stageflow.sh"
cd "$demo"
export STAGEFLOW="$sf"
if [ "$runtime" = compose ]; then
  # No registry is reachable here: the stacks run on images built from Debian packages.
  eval "$("$here/scripts/docker-env.sh")"
  export DOCKER_BUILDKIT=0
  "$here/.venv/bin/python" - "$STAGEFLOW_TEST_IMAGE_PYTHON" "$STAGEFLOW_TEST_IMAGE_POSTGRES" \
      "$STAGEFLOW_TEST_IMAGE_REDIS" "$STAGEFLOW_TEST_IMAGE_NGINX" <<'PY'
import sys, yaml
base, db, redis, nginx = sys.argv[1:]
data = yaml.safe_load(open("stageflow.yml"))
# PostgreSQL in the stacks only: dev stays on the local runtime with the example's own database.
postgres = {"engine": "postgres", "name": "practica_{env}", "user": "practica", "password": "${POSTGRES_PASSWORD}"}
data["cache"] = {"engine": "redis"}
images = {"base": base, "db": db, "redis": redis, "nginx": nginx}
for env in ("staging", "production"):
    e = data["environments"][env]
    e.update({"runtime": "compose", "images": images, "proxy": {"basic_auth": False}, "database": postgres})
# Plain http on loopback for the compose production (TLS would need port 80 for its redirect).
data["environments"]["production"]["url"] = "http://127.0.0.1:8443"
data["environments"]["production"]["skip_checks"] = ["config"]
yaml.safe_dump(data, open("stageflow.yml", "w"), sort_keys=False)
PY
  printf 'deploy/nginx/*/upstream-*.conf\n' >> .gitignore
fi
git init -q
git add -A
git -c user.name="stageflow demo" -c user.email=demo@localhost commit -qm "Practika example app"

echo "== preparing per-environment variables (.env.dev, .env.staging, .env.production; mode 0600)"
if "$sf" config --help >/dev/null 2>&1; then
  "$sf" config setup
else
  for env in dev staging production; do
    umask 077
    printf 'SECRET_KEY="%s"\nDEBUG="0"\n' "$(python3 -c 'import secrets; print(secrets.token_urlsafe(50))')" > ".env.$env"
  done
fi
if [ "$runtime" = compose ]; then
  for env in staging production; do "$sf" config compose "$env"; "$sf" config nginx "$env"; done
fi
git add -A && git -c user.name="stageflow demo" -c user.email=demo@localhost commit -qm "ignore env files" >/dev/null || true

echo "== ./scripts/workflow-orchestrator.sh full"
./scripts/workflow-orchestrator.sh full
echo "== ./scripts/workflow-orchestrator.sh status"
./scripts/workflow-orchestrator.sh status
echo
scheme=https; [ "$runtime" = compose ] && scheme=http
echo "Practika runs in $demo: dev http://127.0.0.1:8001  staging http://127.0.0.1:8002  production $scheme://127.0.0.1:8443"
echo "Try: cd $demo && ./scripts/workflow-orchestrator.sh history production; stop with: stageflow down ENV"
