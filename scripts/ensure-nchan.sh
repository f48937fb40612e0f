#!/usr/bin/env bash
# Make sure Debian's nginx and its Nchan module are installed for the fan-out
# benchmark (bench/fanout.py, contenders nchan:sse and nchan:websocket).
# The benchmark runs nginx itself, with a config and prefix of its own on a
# free loopback port (bench/contenders/nchan.py); the system service is never
# started or used.
set -euo pipefail
NGINX=${NGINX:-/usr/sbin/nginx}
NCHAN=${NCHAN_MODULE:-/usr/lib/nginx/modules/ngx_nchan_module.so}
if [ -x "$NGINX" ] && [ -f "$NCHAN" ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "nginx or Nchan is missing ($NGINX, $NCHAN); install Debian's 'nginx' and" \
    "'libnginx-mod-nchan' packages (as root)." >&2
  exit 1
fi
echo "installing Debian's nginx and libnginx-mod-nchan for the benchmark ..." >&2
apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null
# (Outside containers Debian's package also enables its own service on
# port 80; the benchmark neither needs nor touches it.)
DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q \
  nginx libnginx-mod-nchan >/dev/null
[ -x "$NGINX" ] && [ -f "$NCHAN" ] || { echo "nginx/Nchan install failed" >&2; exit 1; }
