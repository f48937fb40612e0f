#!/usr/bin/env bash
# Make sure Debian's Pushpin is installed for `make bench-extra` (bench/fanout.py,
# contender pushpin:sse). The benchmark runs Pushpin itself, with a config,
# run and log directory of its own on free loopback ports
# (bench/contenders/pushpin.py); the system service is never started or used.
set -euo pipefail
PUSHPIN=${PUSHPIN:-/usr/bin/pushpin}
if [ -x "$PUSHPIN" ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "Pushpin is missing at $PUSHPIN; install Debian's 'pushpin' package (as root)." >&2
  exit 1
fi
echo "installing Debian's pushpin for the benchmark ..." >&2
apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null
# (Outside containers Debian's package also enables its own service on
# port 7999; the benchmark neither needs nor touches it.)
DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q pushpin >/dev/null
[ -x "$PUSHPIN" ] || { echo "Pushpin install failed" >&2; exit 1; }
