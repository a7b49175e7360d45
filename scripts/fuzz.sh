#!/usr/bin/env bash
# `make fuzz`: builds the fuzz targets in fuzz/ with cargo-fuzz (libFuzzer, on
# the nightly toolchain), runs each one from the committed seeds in
# fuzz/corpus/<target>/ plus the corpus it grew before (target/fuzz-work/),
# and prints per target the inputs run, the rate, the coverage and the crashes.
#
#   FUZZ_RUNS=N      inputs per target (default 10000000, the issue's target)
#   FUZZ_SECONDS=S   instead: seconds per target (CI uses a few)
#   FUZZ_JOBS=J      targets fuzzed at once (default 1; the machines have 2 cores)
#   FUZZ_TARGETS="a b"  only these targets (default: every one)
#   FUZZ_RECORD=1    write the table into bench/RESULTS.md (default: for a full run,
#                    every target for FUZZ_RUNS inputs)
#   FUZZ_PROFILE=dev build without optimisation (faster to build, slower to run)
#
# `scripts/fuzz.sh --record` records the last run's results again, without
# fuzzing (the same variables describe the run).
#   FUZZ_FRESH=1     start from the seeds and past crashes only, not the grown corpus
#
# A crash stops its target; its input is copied to fuzz/regressions/<target>/,
# which `cargo test` in fuzz/ replays with the seeds from then on (commit it
# with the fix), and the script fails.
#
# Targets are built with `--sanitizer none`: Weir is safe Rust, whose faults
# are panics, overflows and runaway loops, which libFuzzer catches without a
# sanitizer; AddressSanitizer would halve the rate for no such fault.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$ROOT/target/fuzz-work"
PROFILE="${FUZZ_PROFILE:-release}"
BUILD="$ROOT/target/fuzz-$PROFILE"
BIN="$BUILD/x86_64-unknown-linux-gnu/$([ "$PROFILE" = dev ] && echo debug || echo release)"

# One target, run by the loop below (possibly several at once): writes
# $WORK/<target>.result, one line of the table, and fails on a crash.
if [ "${1:-}" = "--one" ]; then
    target="$2"
    corpus="$WORK/corpus/$target"
    # A fresh corpus: only the seeds and past crashes, however much grew before.
    [ "${FUZZ_FRESH:-0}" = 1 ] && corpus="$WORK/fresh/$target" && rm -rf "$corpus"
    artifacts="$WORK/artifacts/$target"
    rm -rf "$artifacts"
    rm -f "$WORK/$target.result"
    mkdir -p "$corpus" "$artifacts"
    args=(-print_final_stats=1 -timeout=10 "-artifact_prefix=$artifacts/")
    [ -f "$ROOT/fuzz/dicts/$target.dict" ] && args+=("-dict=$ROOT/fuzz/dicts/$target.dict")
    if [ -n "${FUZZ_SECONDS:-}" ]; then
        args+=("-max_total_time=$FUZZ_SECONDS")
    else
        args+=("-runs=${FUZZ_RUNS:-10000000}")
    fi
    log="$WORK/$target.log"
    status=0
    seeds=("$ROOT/fuzz/corpus/$target")
    [ -d "$ROOT/fuzz/regressions/$target" ] && seeds+=("$ROOT/fuzz/regressions/$target")
    "$BIN/$target" "${args[@]}" "$corpus" "${seeds[@]}" >"$log" 2>&1 || status=$?
    stat() { awk -v key="stat::$1:" '$1 == key { print $2 }' "$log"; }
    # No status line at all when an input crashes while the corpus loads.
    coverage="$({ grep -E '^#[0-9]+' "$log" || true; } | tail -1 | sed -nE 's/.* cov: ([0-9]+) ft: ([0-9]+).*/\1 \2/p')"
    [ -n "$coverage" ] || coverage="- -"
    # Slow inputs (slow-unit-*) are reported, not counted as crashes.
    crashes="$(find "$artifacts" -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) | wc -l)"
    printf '| `%s` | %s | %s | %s | %s | %s | %s |\n' "$target" \
        "$(stat number_of_executed_units)" "$(stat average_exec_per_sec)" \
        "${coverage% *}" "${coverage#* }" "$(find "$corpus" -type f | wc -l)" "$crashes" \
        >"$WORK/$target.result"
    if [ "$status" -ne 0 ] || [ "$crashes" -ne 0 ]; then
        mkdir -p "$ROOT/fuzz/regressions/$target"
        find "$artifacts" -type f ! -name 'slow-unit-*' -exec cp {} "$ROOT/fuzz/regressions/$target/" \;
        echo "fuzz: $target failed (exit $status); its input is in fuzz/regressions/$target/:" >&2
        { grep -E -A3 'panicked at|ERROR: libFuzzer' "$log" || true; } | head -20 >&2
        exit 1
    fi
    exit 0
fi

cd "$ROOT"
scripts/setup.sh fuzz
export PATH="$ROOT/.tools/bin:$PATH"
targets="${FUZZ_TARGETS:-$(sed -nE 's/^name = "([a-z_]+)"$/\1/p' fuzz/Cargo.toml | grep -v '^weir-fuzz$' | tr '\n' ' ')}"
status=0
# `--record`: the table of the last run's results, recorded again (after an
# interrupted recording, say), without building or fuzzing.
if [ "${1:-}" != "--record" ]; then
    echo "fuzz: building $targets($PROFILE)"
    profile_flag=()
    [ "$PROFILE" = dev ] && profile_flag=(--dev)
    mkdir -p "$WORK"
    (cd fuzz && cargo +nightly fuzz build "${profile_flag[@]}" --sanitizer none --target-dir "$BUILD")
    git -C "$ROOT" describe --always --dirty >"$WORK/built-at" 2>/dev/null || echo unknown >"$WORK/built-at"

    mkdir -p "$WORK"
    if [ -n "${FUZZ_SECONDS:-}" ]; then
        echo "fuzz: each target for ${FUZZ_SECONDS} s, ${FUZZ_JOBS:-1} at a time"
    else
        echo "fuzz: each target for ${FUZZ_RUNS:-10000000} inputs, ${FUZZ_JOBS:-1} at a time"
    fi
    for target in $targets; do rm -f "$WORK/$target.result"; done
    printf '%s\n' $targets | xargs -P "${FUZZ_JOBS:-1}" -I{} "$ROOT/scripts/fuzz.sh" --one {} || status=$?
fi

header='| target | inputs run | per second | coverage (edges) | features | corpus | crashes |
|---|---|---|---|---|---|---|'
table="$header"
for target in $targets; do
    if [ -f "$WORK/$target.result" ]; then
        table="$table
$(cat "$WORK/$target.result")"
    else
        echo "fuzz: $target did not run (see $WORK/$target.log)" >&2
        status=1
    fi
done
echo "$table"

# Recorded by default only for a full run: every target, for a number of inputs.
full_run=0
[ -z "${FUZZ_SECONDS:-}" ] && [ -z "${FUZZ_TARGETS:-}" ] && full_run=1
if [ "$status" -eq 0 ] && [ "${FUZZ_RECORD:-$full_run}" = 1 ]; then
    if [ -n "${FUZZ_SECONDS:-}" ]; then
        budget="${FUZZ_SECONDS} s per target"
    else
        budget="${FUZZ_RUNS:-10000000} inputs per target"
    fi
    section="<!-- fuzz:begin -->
## Fuzzing: every parser that faces the network or an operator

\`make fuzz\` ($(date -u +%Y-%m-%d), commit $(cat "$WORK/built-at" 2>/dev/null || echo unknown), $(nproc) cores, FUZZ_JOBS=${FUZZ_JOBS:-1}, \`--sanitizer none\`,
$budget; what each target feeds and checks: docs/security.md).
Target: at least 10,000,000 inputs per target and no crash.

$table
<!-- fuzz:end -->"
    results=bench/RESULTS.md
    if grep -q '<!-- fuzz:begin -->' "$results"; then
        awk -v section="$section" '
            /<!-- fuzz:begin -->/ { print section; skip = 1; next }
            /<!-- fuzz:end -->/ { skip = 0; next }
            !skip { print }' "$results" >"$results.new"
        mv "$results.new" "$results"
    else
        printf '\n%s\n' "$section" >>"$results"
    fi
    echo "fuzz: recorded in $results"
fi
exit "$status"
