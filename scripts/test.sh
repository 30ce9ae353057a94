#!/usr/bin/env bash
# The whole test suite: installs what it needs (venv, PyPI packages, Debian packages when root),
# then ruff, mypy, the docs build and pytest. The tests start their own PostgreSQL, Redis, nginx and HTTP receivers.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$here/scripts/bootstrap.sh" --dev
cd "$here"
export PATH="$here/.venv/bin:$PATH"
echo "== ruff"; ruff check src tests bench examples
echo "== mypy"; mypy
# strict: a broken link, a missing page or an unlisted one fails; the reference pages are generated here.
echo "== docs"; mkdocs build --strict --quiet
echo "== pytest"; exec python -m pytest "$@"
