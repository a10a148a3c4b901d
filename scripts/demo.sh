#!/usr/bin/env bash
# Sets up .venv, then runs the demo: serve on loopback, build a tiny model, import it, show it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/outcrop demo "$@"
