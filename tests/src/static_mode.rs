//! `envoy/static.yaml`, the file users run, adapted to a test's processes:
//! its listener and admin API move to ports the kernel picks, and its
//! `backends` cluster points at the test's backends.

use std::net::SocketAddr;

use serde_json::{Value, json};

use crate::envoy::locality_endpoints;
use crate::paths;

/// Reads `envoy/static.yaml` and points it at `backends`, on run-time ports.
pub fn static_bootstrap(backends: &[SocketAddr]) -> anyhow::Result<Value> {
    let path = paths::repo_root().join("envoy/static.yaml");
    let text = std::fs::read_to_string(&path)?;
    let mut bootstrap: Value = serde_saphyr::from_str(&text)
        .map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;

    bootstrap["admin"]["address"]["socket_address"]["port_value"] = json!(0);
    for listener in array_mut(&mut bootstrap["static_resources"]["listeners"])? {
        listener["address"]["socket_address"]["port_value"] = json!(0);
    }
    let cluster = array_mut(&mut bootstrap["static_resources"]["clusters"])?
        .iter_mut()
        .find(|cluster| cluster["name"] == "backends")
        .ok_or_else(|| anyhow::anyhow!("{} has no `backends` cluster", path.display()))?;
    cluster["load_assignment"]["endpoints"] = json!([locality_endpoints(backends)]);
    Ok(bootstrap)
}

fn array_mut(value: &mut Value) -> anyhow::Result<&mut Vec<Value>> {
    value
        .as_array_mut()
        .ok_or_else(|| anyhow::anyhow!("expected a list in envoy/static.yaml"))
}
