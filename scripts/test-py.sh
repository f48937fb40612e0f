#!/usr/bin/env bash
# The Python tests as five pytest runs side by side: the browser tests in two
# halves (tests/e2e, mostly waiting on Chromium and servers), the server
# process tests (tests/server) and the client ones (tests/client, both mostly
# waiting on subprocesses), and everything else. Run one after another they
# took over fifteen minutes, three side by side nine, these five eight (six
# starved the timing tests of CPU). The side runs' reports go to test-output/pytest-*.log and
# are printed once all are done; the exit status fails if any run failed.
# Usage: scripts/test-py.sh [PYTEST OPTIONS...]
set -uo pipefail
PYTEST=${PYTEST:-.venv/bin/pytest}
mkdir -p test-output
# The browser tests' halves, by file, about even in time.
E2E_A="tests/e2e/test_client_e2e.py tests/e2e/test_control_e2e.py tests/e2e/test_demo_chat_publish.py
  tests/e2e/test_demo_presence.py tests/e2e/test_idle_cuts.py tests/e2e/test_publish_cookie_e2e.py
  tests/e2e/test_seed_page.py"
# shellcheck disable=SC2086
E2E_B=$(ls tests/e2e/test_*.py | grep -v -F -x -f <(printf '%s\n' $E2E_A))
declare -A runs=()
side() {  # side NAME PYTEST-ARGS...: one run in the background, its report in a log
  local name=$1
  shift
  "$PYTEST" -q "$@" >"test-output/pytest-$name.log" 2>&1 &
  runs[$name]=$!
}
# shellcheck disable=SC2086
side e2e-a "$@" $E2E_A
# shellcheck disable=SC2086
side e2e-b "$@" $E2E_B
# The webhooks' server tests (a minute of them waits for a receiver that is
# down) run with the client tests, which end sooner: the runs end closer.
MOVED=tests/server/test_webhooks_served.py
side server "$@" tests/server --ignore=$MOVED
side client "$@" tests/client $MOVED
trap 'kill "${runs[@]}" 2>/dev/null' INT TERM
"$PYTEST" -q "$@" --ignore=tests/e2e --ignore=tests/server --ignore=tests/client
rest=$?
failed=0
summary="pytest: the rest exit $rest"
for name in server client e2e-a e2e-b; do
  wait "${runs[$name]}"
  status=$?
  echo
  echo "tests: $name (test-output/pytest-$name.log):"
  cat "test-output/pytest-$name.log"
  summary="$summary; $name exit $status"
  [ "$status" -eq 0 ] || failed=1
done
echo "$summary"
[ "$rest" -eq 0 ] && [ "$failed" -eq 0 ]
