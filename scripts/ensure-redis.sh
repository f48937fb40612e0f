#!/usr/bin/env bash
# Make sure a redis-server answers on 127.0.0.1:6379 for the Redis tests, and
# that redis-server and redis-cli are installed (tests start servers of their
# own on free ports, and stop and restart those, never the shared one).
# Debian's package; installed when missing (as root), as for Chromium.
set -euo pipefail
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  if [ "$(id -u)" != 0 ]; then
    echo "redis-server is missing; install Debian's 'redis-server' package (as root)." >&2
    exit 1
  fi
  echo "installing Debian's redis-server for the Redis tests ..." >&2
  apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q redis-server >/dev/null
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  for _ in $(seq 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null || { echo "redis-server did not start" >&2; exit 1; }
