#!/usr/bin/env bash
# Make sure PostgreSQL answers on 127.0.0.1:5432 (user postgres, trust auth)
# for the outbox tests, and that initdb and pg_ctl are installed (tests that
# restart PostgreSQL run a cluster of their own on a free port, never the
# shared one). Debian's package; installed and started when missing (as
# root), as for Redis.
set -euo pipefail
BIN=/usr/lib/postgresql/15/bin
ready() { "$BIN/pg_isready" -q -h 127.0.0.1 -p 5432 -U postgres 2>/dev/null; }
if [ ! -x "$BIN/initdb" ] || [ ! -x "$BIN/pg_ctl" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "PostgreSQL 15 is missing; install Debian's 'postgresql-15' package (as root)." >&2
    exit 1
  fi
  echo "installing Debian's postgresql-15 for the outbox tests ..." >&2
  apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q postgresql-15 >/dev/null
fi
if ! ready; then
  if command -v pg_ctlcluster >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q '^15 *main'; then
    pg_ctlcluster 15 main start || true
  fi
fi
for _ in $(seq 100); do ready && break; sleep 0.1; done
ready || { echo "PostgreSQL does not answer on 127.0.0.1:5432" >&2; exit 1; }
psql -q -h 127.0.0.1 -U postgres -d postgres -c "select 1" >/dev/null \
  || { echo "PostgreSQL on 127.0.0.1:5432 refuses user postgres (trust auth expected)" >&2; exit 1; }
