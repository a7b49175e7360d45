#!/usr/bin/env bash
# Builds what operators install Weir from, without a container daemon
# (buildah, vfs storage), into the OCI image layout dist/oci (docs/install.md):
#
#   weir-filter:VERSION  the filter as Istio's WasmPlugin and Envoy Gateway's
#                        EnvoyExtensionPolicy pull it: one layer, /plugin.wasm;
#   weir:VERSION         weir: the stripped binary, the shared libraries it
#                        links and nothing else, run as a non-root user.
#
# Push them with skopeo: skopeo copy oci:dist/oci:weir:VERSION docker://REGISTRY/weir:VERSION
# Needs dist/weir and dist/weir_filter.wasm (make build) and the packaging
# tools (scripts/setup.sh packaging).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
say() { printf '\033[1mpackage:\033[0m %s\n' "$*"; }

VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)"
REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
SOURCE="$(sed -n 's/^repository = "\(.*\)"/\1/p' Cargo.toml | head -n 1)"
OUT="dist/oci"
# The user weir runs as in its image: no name on the host, no privileges.
UID_GID=65532

for file in dist/weir dist/weir_filter.wasm; do
    [ -f "$file" ] || { say "$file is missing: run make build" >&2; exit 1; }
done

# A storage of its own, thrown away afterwards: nothing is pulled, and each
# run builds from scratch.
STORE="$(mktemp -d "${TMPDIR:-/tmp}/weir-package.XXXXXX")"
trap 'buildah_ rm --all >/dev/null 2>&1 || true; rm -rf "$STORE"' EXIT
buildah_() {
    buildah --root "$STORE/root" --runroot "$STORE/run" --storage-driver vfs "$@"
}

# The OCI annotations both images carry, as labels and as annotations.
describe() {
    local container="$1" title="$2" description="$3" pair
    for pair in \
        "org.opencontainers.image.title=$title" \
        "org.opencontainers.image.description=$description" \
        "org.opencontainers.image.version=$VERSION" \
        "org.opencontainers.image.revision=$REVISION" \
        "org.opencontainers.image.created=$CREATED" \
        "org.opencontainers.image.source=$SOURCE" \
        "org.opencontainers.image.licenses=Apache-2.0"; do
        buildah_ config --label "$pair" --annotation "$pair" "$container"
    done
}

rm -rf "$OUT"
mkdir -p "$OUT"

say "weir-filter:$VERSION (plugin.wasm, one layer)"
filter="$(buildah_ from scratch)"
buildah_ copy --chmod 0644 "$filter" dist/weir_filter.wasm /plugin.wasm >/dev/null
describe "$filter" weir-filter "Weir's proxy-wasm filter for Envoy: priority admission, routing, canary splits"
buildah_ commit --quiet --format oci --rm "$filter" "weir-filter:$VERSION" >/dev/null
buildah_ push --quiet "weir-filter:$VERSION" "oci:$OUT:weir-filter:$VERSION"

say "weir:$VERSION (the binary and the libraries it links, user $UID_GID)"
rootfs="$STORE/rootfs"
mkdir -p "$rootfs"/{usr/local/bin,usr/share/weir,etc/weir,var/lib,tmp} "$STORE/state/weir"
install -m 0755 dist/weir "$rootfs/usr/local/bin/weir"
install -m 0644 dist/weir_filter.wasm "$rootfs/usr/share/weir/weir_filter.wasm"
# The dynamic loader and every library ldd names, at the paths it names.
ldd dist/weir | grep -o '/[^ ]*' | sort -u | while read -r lib; do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
done
printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nweir:x:%s:%s:weir:/var/lib/weir:/usr/sbin/nologin\n' \
    "$UID_GID" "$UID_GID" >"$rootfs/etc/passwd"
printf 'root:x:0:\nweir:x:%s:\n' "$UID_GID" >"$rootfs/etc/group"
chmod 1777 "$rootfs/tmp"
image="$(buildah_ from scratch)"
buildah_ copy "$image" "$rootfs" / >/dev/null
# Its state directory, the one place it writes, is its own.
buildah_ copy --chown "$UID_GID:$UID_GID" "$image" "$STORE/state" /var/lib >/dev/null
describe "$image" weir "Weir's control server: xDS (ADS, ECDS), OTLP ingest, canary judgement"
buildah_ config \
    --user "$UID_GID:$UID_GID" \
    --workingdir /var/lib/weir \
    --entrypoint '["/usr/local/bin/weir"]' \
    --cmd '["serve"]' \
    --env WEIR_POLICY=/etc/weir/policy.yaml \
    --env WEIR_STATE=/var/lib/weir/weir-state.redb \
    --env WEIR_WASM=/usr/share/weir/weir_filter.wasm \
    --port 18000 --port 18001 \
    "$image"
buildah_ commit --quiet --format oci --rm "$image" "weir:$VERSION" >/dev/null
buildah_ push --quiet "weir:$VERSION" "oci:$OUT:weir:$VERSION"

# What each weighs in a registry: its compressed layers and config.
for name in weir-filter weir; do
    size="$(skopeo inspect --raw "oci:$OUT:$name:$VERSION" \
        | python3 -c 'import json,sys; m=json.load(sys.stdin); print(m["config"]["size"] + sum(l["size"] for l in m["layers"]))')"
    say "$OUT:$name:$VERSION $(awk -v b="$size" 'BEGIN { printf "%.1f MB", b / 1e6 }') compressed"
done
