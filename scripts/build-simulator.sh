#!/usr/bin/env bash
# Builds the dashboard's policy simulator: the weir-simulator crate (the
# policy crate the filter runs, with wasm-bindgen bindings) compiled for
# wasm32-unknown-unknown by scripts/build-filter.sh (rustup's or Debian's
# toolchain, whichever scripts/setup.sh found), then turned into an ES module
# and its .wasm by wasm-bindgen, into dist/simulator/, where `weir serve`
# (run as dist/weir) finds them.
# Needs wasm-bindgen at the version of the wasm-bindgen crate in Cargo.lock:
# scripts/setup.sh wasm-bindgen installs it into .tools/bin.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT=dist/simulator

want="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)"
bindgen="$ROOT/.tools/bin/wasm-bindgen"
[ -x "$bindgen" ] || bindgen="$(command -v wasm-bindgen || true)"
have="$([ -n "$bindgen" ] && "$bindgen" --version 2>/dev/null | awk '{ print $2 }' || true)"
if [ -z "$want" ] || [ "$have" != "$want" ]; then
    echo "wasm-bindgen ${want:-?} is needed (found: ${have:-none}): run scripts/setup.sh wasm-bindgen" >&2
    exit 1
fi

scripts/build-filter.sh weir-simulator
# build-filter.sh copies every module it built into dist/; this one is only
# wasm-bindgen's input.
module=dist/weir_simulator.wasm
[ -f "$module" ] || { echo "the build left no $module" >&2; exit 1; }
rm -rf "$OUT.staged"
"$bindgen" --target web --no-typescript --remove-name-section --remove-producers-section --out-dir "$OUT.staged" "$module"
rm -f "$module"
rm -rf "$OUT"
mv "$OUT.staged" "$OUT"
echo "simulator: $(du -sh "$OUT" | cut -f1) in $OUT ($(ls "$OUT" | tr '\n' ' '))"
