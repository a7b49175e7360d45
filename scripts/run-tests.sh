#!/usr/bin/env bash
# Runs every Rust test in the workspace and ends with one line totalling them
# (cargo prints a result line per test binary, the last often a doc-test run
# with nothing in it).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

cargo test --locked --workspace "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}

awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
