//! Where the test bed finds the artefacts `make build` produces and the tools
//! `make` installs. Each can be overridden by an environment variable.

use std::path::PathBuf;

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The Envoy binary: `$WEIR_ENVOY`, or the one `make` installs under `.tools/`.
pub fn envoy_binary() -> PathBuf {
    existing("WEIR_ENVOY", repo_root().join(".tools/bin/envoy"))
}

/// The filter module: `$WEIR_FILTER_WASM`, or `dist/weir_filter.wasm`.
pub fn filter_wasm() -> PathBuf {
    existing(
        "WEIR_FILTER_WASM",
        repo_root().join("dist/weir_filter.wasm"),
    )
}

/// The `weir` binary: `$WEIR_BIN`, or `dist/weir`.
pub fn weir_binary() -> PathBuf {
    existing("WEIR_BIN", repo_root().join("dist/weir"))
}

fn existing(var: &str, default: PathBuf) -> PathBuf {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or(default);
    assert!(
        path.exists(),
        "{} does not exist: run `make build` (or set {var})",
        path.display()
    );
    path
}

/// The etcd server: `$WEIR_ETCD`, or Debian's `/usr/bin/etcd` that
/// `scripts/setup.sh` installs.
pub fn etcd_binary() -> PathBuf {
    existing("WEIR_ETCD", PathBuf::from("/usr/bin/etcd"))
}

/// A packaging tool (`prometheus`, `promtool`, `buildah`, `skopeo`, `umoci`,
/// `docker-registry`): Debian's, in `/usr/bin`, which `scripts/setup.sh
/// packaging` installs.
pub fn packaging_tool(name: &str) -> PathBuf {
    let path = PathBuf::from("/usr/bin").join(name);
    assert!(
        path.exists(),
        "{} does not exist: run `scripts/setup.sh packaging` (make test does)",
        path.display()
    );
    path
}
