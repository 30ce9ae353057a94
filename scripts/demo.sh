#!/usr/bin/env bash
# The main job, end to end on the local runtime (no Docker): copy the Practika example into a scratch
# git repository, prepare each environment's variables, promote one release dev → staging → production,
# then show the status. Usage: scripts/demo.sh [SCRATCH_DIR]   (default /tmp/stageflow-demo)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
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
git add -A && git -c user.name="stageflow demo" -c user.email=demo@localhost commit -qm "ignore env files" >/dev/null || true

echo "== ./scripts/workflow-orchestrator.sh full"
./scripts/workflow-orchestrator.sh full
echo "== ./scripts/workflow-orchestrator.sh status"
./scripts/workflow-orchestrator.sh status
echo
echo "Practika runs in $demo: dev http://127.0.0.1:8001  staging http://127.0.0.1:8002  production https://127.0.0.1:8443"
echo "Try: cd $demo && ./scripts/workflow-orchestrator.sh history production; stop with: stageflow down ENV"
