#!/usr/bin/env bash
# The Python tests as two pytest runs side by side, one per core: the browser
# tests (tests/e2e, mostly waiting on Chromium and servers) and everything
# else. The browser run's report goes to test-output/pytest-e2e.log and is
# printed once both are done; the exit status fails if either run failed.
# Usage: scripts/test-py.sh [PYTEST OPTIONS...]
set -uo pipefail
PYTEST=${PYTEST:-.venv/bin/pytest}
LOG=test-output/pytest-e2e.log
mkdir -p test-output
"$PYTEST" -q "$@" tests/e2e >"$LOG" 2>&1 &
e2e=$!
trap 'kill "$e2e" 2>/dev/null' INT TERM
"$PYTEST" -q "$@" --ignore=tests/e2e
rest=$?
wait "$e2e"
browser=$?
echo
echo "browser tests (tests/e2e):"
cat "$LOG"
echo "pytest: everything but tests/e2e exit $rest; tests/e2e exit $browser"
[ "$rest" -eq 0 ] && [ "$browser" -eq 0 ]
