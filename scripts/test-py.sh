#!/usr/bin/env bash
# The Python tests as three pytest runs side by side: the browser tests
# (tests/e2e, mostly waiting on Chromium and servers), the server and client
# process tests (tests/server, tests/client: mostly waiting on subprocesses),
# and everything else. Their CPU use together stays under two cores' worth;
# run one after another they took over six minutes. The two side runs'
# reports go to test-output/pytest-e2e.log and pytest-processes.log and are
# printed once all are done; the exit status fails if any run failed.
# Usage: scripts/test-py.sh [PYTEST OPTIONS...]
set -uo pipefail
PYTEST=${PYTEST:-.venv/bin/pytest}
E2E_LOG=test-output/pytest-e2e.log
PROC_LOG=test-output/pytest-processes.log
mkdir -p test-output
"$PYTEST" -q "$@" tests/e2e >"$E2E_LOG" 2>&1 &
e2e=$!
"$PYTEST" -q "$@" tests/server tests/client >"$PROC_LOG" 2>&1 &
procs=$!
trap 'kill "$e2e" "$procs" 2>/dev/null' INT TERM
"$PYTEST" -q "$@" --ignore=tests/e2e --ignore=tests/server --ignore=tests/client
rest=$?
wait "$procs"
processes=$?
wait "$e2e"
browser=$?
echo
echo "server and client process tests (tests/server, tests/client):"
cat "$PROC_LOG"
echo
echo "browser tests (tests/e2e):"
cat "$E2E_LOG"
echo "pytest: the rest exit $rest; tests/server and tests/client exit $processes; tests/e2e exit $browser"
[ "$rest" -eq 0 ] && [ "$processes" -eq 0 ] && [ "$browser" -eq 0 ]
