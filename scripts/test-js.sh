#!/usr/bin/env bash
# The JS client's unit tests under node's built-in runner, compactly: a dot
# per test and the failures in full on the terminal, then one totals line.
# The full TAP report goes to test-output/js-tests.tap.
# Usage: scripts/test-js.sh [FILES OR DIRECTORIES...]   (default: tests/js/)
set -uo pipefail
OUT=${TEST_JS_TAP:-test-output/js-tests.tap}
mkdir -p "$(dirname "$OUT")"
node --test \
  --test-reporter=dot --test-reporter-destination=stdout \
  --test-reporter=tap --test-reporter-destination="$OUT" \
  "${@:-tests/js/}"
status=$?
# TAP ends with "# tests N", "# pass N", "# fail N", ... lines: one line of them.
totals=$(sed -n 's/^# \(tests\|pass\|fail\|cancelled\|skipped\|todo\) \([0-9]*\)$/\1 \2/p' "$OUT" | tail -n 6 | paste -sd, - | sed 's/,/, /g')
echo
echo "js tests: ${totals:-no totals (see $OUT)}; full report: $OUT"
exit $status
