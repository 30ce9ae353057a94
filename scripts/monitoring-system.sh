#!/usr/bin/env bash
# Monitoring system: all | env ENV | continuous SECONDS | report ENV | alerts — all of them `stageflow monitor`.
# Run from the root of an app that has a stageflow.yml. Every argument is passed through, e.g.
#   SLACK_WEBHOOK=https://hooks.slack.com/services/… ./scripts/monitoring-system.sh continuous 600
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/_stageflow.sh"
exec "$STAGEFLOW_BIN" monitor "$@"
