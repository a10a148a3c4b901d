#!/usr/bin/env bash
# The browser tests (tests/browser/, marker `browser`) drive the system's Chromium through Playwright.
# Installs Debian's `chromium` package when it is missing and this runs as root (as CI does); never
# downloads a browser from elsewhere. Exits non-zero when no chromium is available afterwards, and
# the tests then skip, saying why. Quiet unless it has to install.
set -uo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "outcrop: chromium is missing; install it (Debian/Ubuntu: sudo apt-get install -y chromium) to run the browser tests" >&2
  exit 1
fi
echo "outcrop: installing chromium with apt-get for the browser tests..." >&2
export DEBIAN_FRONTEND=noninteractive
if ! timeout 600 apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; then
  # The package lists may be missing or stale (fresh containers have none).
  timeout 300 apt-get update -qq >/dev/null 2>&1 || true
  timeout 600 apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 || true
fi
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
echo "outcrop: apt-get could not install chromium (no package repository reachable?)" >&2
exit 1
