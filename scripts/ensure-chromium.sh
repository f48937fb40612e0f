#!/usr/bin/env bash
# Make sure Debian's Chromium is at /usr/bin/chromium for the browser tests.
# No test tool may download a browser of its own here; we use the distro's.
set -euo pipefail
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if [ -x "$CHROMIUM" ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "Chromium is missing at $CHROMIUM; install Debian's 'chromium' package (as root)." >&2
  exit 1
fi
echo "installing Debian's chromium for the browser tests ..." >&2
apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q chromium >/dev/null
[ -x "$CHROMIUM" ] || { echo "chromium install failed" >&2; exit 1; }
