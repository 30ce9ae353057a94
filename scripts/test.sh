#!/usr/bin/env bash
# The whole test suite: installs what it needs (venv, PyPI packages, Debian packages when root),
# then ruff, mypy, the docs build and pytest. The tests start their own PostgreSQL, Redis, nginx and HTTP receivers.
# Without arguments (CI) pytest runs under coverage, CLI subprocesses included, and two of
# stageflow's own gates close the run: coverage >= $STAGEFLOW_MIN_COVERAGE (85) and `stageflow scan`
# on stageflow itself with no finding at or above high. Arguments go to pytest alone.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$here/scripts/bootstrap.sh" --dev
cd "$here"
export PATH="$here/.venv/bin:$PATH"
echo "== ruff"; ruff check src tests bench examples
echo "== mypy"; mypy
# strict: a broken link, a missing page or an unlisted one fails; the reference pages are generated here.
echo "== docs"; mkdocs build --strict --quiet
if [ "$#" -gt 0 ]; then
  echo "== pytest"; exec python -m pytest "$@"
fi
echo "== pytest (under coverage)"
# An absolute data file: CLI subprocesses run in the test apps' directories.
export COVERAGE_FILE="$here/.coverage"
rm -f "$here"/.coverage "$here"/.coverage.* "$here/coverage.xml"
python -m coverage run -m pytest
python -m coverage combine -q
python -m coverage xml -q -o "$here/coverage.xml"
python -m coverage report --format=total | sed 's/^/coverage total: /; s/$/ %/'
echo "== gate: coverage"
stageflow gate --root "$here" --only coverage --coverage "$here/coverage.xml" \
  --min-coverage "${STAGEFLOW_MIN_COVERAGE:-85}"
echo "== scan: stageflow itself"
# These machines reach package downloads but not vulnerability services (PyPI's JSON API, OSV), so
# pip-audit would crash here; tests/integration/test_scan.py runs it against a loopback OSV stand-in.
# Where the service is reachable: STAGEFLOW_SCAN_ARGS= ./scripts/test.sh
# shellcheck disable=SC2086
stageflow scan --root "$here" --fail-on high ${STAGEFLOW_SCAN_ARGS---skip pip-audit}
