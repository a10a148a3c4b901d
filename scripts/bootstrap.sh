#!/usr/bin/env bash
# Creates .venv (if missing) and installs Outcrop with its dev extras.
# torch is installed first and held at the CPU wheel (constraints.txt), so nothing pulls CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.outcrop-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/constraints.txt -nt "$stamp" ]; then
  echo "outcrop: installing into .venv (first run takes a few minutes)..." >&2
  started=$SECONDS
  echo "outcrop: [1/2] PyTorch 2.13.0 (CPU wheel)" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check -c scripts/constraints.txt "torch==2.13.0" \
    2> >(grep -vE "is ignored: it is neither|^\s*$" >&2 || true)
  echo "outcrop: [2/2] Outcrop and its dependencies (transformers, FastAPI, boto3, Ray, test tools)" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check -c scripts/constraints.txt -e ".[dev]" \
    2> >(grep -vE "is ignored: it is neither|BuildBackendWarning|^\s*$" >&2 || true)
  touch "$stamp"
  echo "outcrop: installed in $((SECONDS - started)) s" >&2
fi
