#!/usr/bin/env bash
# Workflow orchestrator: dev | staging | prod | full | status | rollback ENV | cleanup — all of them stageflow.
# Run from the root of an app that has a stageflow.yml. Every argument is passed through.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/_stageflow.sh"
exec "$STAGEFLOW_BIN" "$@"
