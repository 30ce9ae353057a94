#!/usr/bin/env bash
# Configuration manager: setup | generate ENV [--template NAME] [--rotate KEY] [--encrypt] | validate ENV
# (and compose ENV | nginx ENV) — all of them `stageflow config`.
# Run from the root of an app that has a stageflow.yml. Every argument is passed through.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/_stageflow.sh"
exec "$STAGEFLOW_BIN" config "$@"
