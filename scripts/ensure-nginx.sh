#!/usr/bin/env bash
# Make sure Debian's nginx is installed for the proxy tests (tests/nginx.py).
# The tests run nginx themselves, with a config and prefix of their own on
# free loopback ports; the system service is never started or used.
set -euo pipefail
NGINX=${NGINX:-/usr/sbin/nginx}
if [ -x "$NGINX" ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "nginx is missing at $NGINX; install Debian's 'nginx' package (as root)." >&2
  exit 1
fi
echo "installing Debian's nginx for the proxy tests ..." >&2
apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null
# (Outside containers Debian's package also enables its own service on
# port 80; the tests neither need nor touch it.)
DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q nginx >/dev/null
[ -x "$NGINX" ] || { echo "nginx install failed" >&2; exit 1; }
