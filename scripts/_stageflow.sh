# Sourced by the wrapper scripts: find the stageflow executable.
# Order: $STAGEFLOW, the venv of the stageflow checkout these scripts live in, then PATH.
if [ -n "${STAGEFLOW:-}" ]; then
  STAGEFLOW_BIN="$STAGEFLOW"
elif [ -x "$here/../.venv/bin/stageflow" ]; then
  STAGEFLOW_BIN="$here/../.venv/bin/stageflow"
elif command -v stageflow >/dev/null 2>&1; then
  STAGEFLOW_BIN="$(command -v stageflow)"
else
  echo "error: stageflow is not installed (run scripts/bootstrap.sh in the stageflow checkout, or set STAGEFLOW=/path/to/stageflow)" >&2
  exit 2
fi
