#!/usr/bin/env bash
# Sets up .venv and runs the whole test suite: ruff, mypy, then pytest (args pass through to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
bash scripts/ensure-postgres.sh || echo "outcrop: PostgreSQL is not reachable; postgres-marked tests will be skipped" >&2
bash scripts/ensure-chromium.sh || echo "outcrop: no chromium; browser-marked tests will be skipped" >&2
if [ "${OUTCROP_SKIP_LINT:-0}" != "1" ]; then
  .venv/bin/ruff check outcrop tests benchmarks
  .venv/bin/ruff format --check outcrop tests benchmarks
  .venv/bin/mypy outcrop
fi
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
# Exit code 5 means "no tests collected"; that is only fine for a deliberately narrowed run.
if [ $rc -eq 5 ] && [ $# -gt 0 ]; then rc=0; fi
exit $rc
