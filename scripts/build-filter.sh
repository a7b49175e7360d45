#!/usr/bin/env bash
# Builds crates for wasm32-unknown-unknown with whichever toolchain
# scripts/setup.sh found: rustup's wasm32 std, or Debian's rustc compiling std
# from source (-Zbuild-std) and linking with wasm-ld. Every .wasm module built
# is copied into dist/.
# Usage: build-filter.sh PACKAGE...
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
packages=()
for p in "$@"; do packages+=(-p "$p"); done

if [ "${WEIR_WASM_TOOLCHAIN:-}" != "debian" ] \
    && [ -d "$(rustc --print sysroot)/lib/rustlib/wasm32-unknown-unknown/lib" ]; then
    target_dir=target/wasm
    cargo build --locked --profile wasm --target wasm32-unknown-unknown \
        --target-dir "$target_dir" "${packages[@]}"
else
    major="$(/usr/bin/rustc -vV 2>/dev/null | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')"
    wasm_ld="/usr/lib/llvm-$major/bin/wasm-ld"
    if [ -z "$major" ] || [ ! -x "$wasm_ld" ]; then
        echo "no wasm32 toolchain: run scripts/setup.sh wasm" >&2
        exit 1
    fi
    # A separate target directory: the two compilers would invalidate each other's artefacts.
    target_dir=target/wasm-debian
    RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 RUSTFLAGS="-C linker=$wasm_ld" \
        /usr/bin/cargo build --locked --profile wasm -Zbuild-std=std,panic_abort \
        --target wasm32-unknown-unknown --target-dir "$target_dir" "${packages[@]}"
fi

mkdir -p dist
for module in "$target_dir"/wasm32-unknown-unknown/wasm/*.wasm; do
    [ -e "$module" ] && cp "$module" dist/
done

# Weir's module exports only the callbacks it implements (filter/callbacks.txt):
# Envoy enters the VM for every one exported, on every request. The benchmark's
# do-nothing module is kept as built, and pruned the same way beside it.
# (Every module built is copied above, so both are pruned whenever present.)
prune() {
    cargo build --locked --release --quiet -p weir-wasm-prune
    local keep
    keep="$(grep -v '^#' filter/callbacks.txt | grep -v '^$' | paste -sd, -)"
    target/release/weir-wasm-prune "$1" "$2" --keep "$keep"
}
if [ -e dist/weir_filter.wasm ]; then
    prune dist/weir_filter.wasm dist/weir_filter.wasm
fi
if [ -e dist/weir_noop_filter.wasm ]; then
    prune dist/weir_noop_filter.wasm dist/weir_noop_pruned.wasm
fi
exit 0
