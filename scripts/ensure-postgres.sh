#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers on 127.0.0.1:5432 (starts the local cluster if it is down).
set -uo pipefail
ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
ready && exit 0
command -v pg_ctlcluster >/dev/null 2>&1 || exit 1
version=$(ls /etc/postgresql 2>/dev/null | head -n1)
[ -n "$version" ] || exit 1
pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true
for _ in $(seq 1 30); do ready && exit 0; sleep 1; done
exit 1
