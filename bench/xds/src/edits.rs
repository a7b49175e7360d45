//! Policy edits that change what Envoy gets, each undone by its next use, and
//! the atomic write (a new file renamed into place, as editors save).

use std::path::Path;
use std::time::Instant;

use serde_json::{Value, json};

/// The cluster an edit moves or adds next to.
const MOVED_CLUSTER: &str = "ingest-us";
/// The cluster the add/remove edit adds.
const ADDED_CLUSTER: &str = "ingest-us-2";
/// The service the added cluster is placed in, and whose canary is stepped.
const SERVICE: &str = "ingest";

/// What an edit changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// `routing.spread` 0.05 ↔ 0.07: the filter's configuration (ECDS) only.
    Spread,
    /// The canary's first step 1 % ↔ 2 %: the filter's configuration (ECDS) only.
    CanaryStep,
    /// `ingest-us`'s endpoint moves to a spare backend and back: its endpoints
    /// (EDS), and the filter's configuration (ECDS), which embeds the whole policy.
    EndpointMove,
    /// A cluster `ingest-us-2` is added to the `ingest` service and removed
    /// again: clusters, endpoints and the filter's configuration (CDS, EDS, ECDS).
    ClusterAddRemove,
}

impl Kind {
    /// Every kind, in the order edits cycle through them.
    pub(crate) const ALL: [Kind; 4] = [
        Kind::Spread,
        Kind::CanaryStep,
        Kind::EndpointMove,
        Kind::ClusterAddRemove,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Spread => "`routing.spread` 0.05 ↔ 0.07",
            Self::CanaryStep => "canary first step 1 % ↔ 2 %",
            Self::EndpointMove => "`ingest-us` endpoint moved ↔ back",
            Self::ClusterAddRemove => "cluster `ingest-us-2` added ↔ removed",
        }
    }
}

/// The policy document as it is being edited.
pub(crate) struct Editor {
    doc: Value,
    original_endpoints: Value,
    spare_endpoint: String,
    toggled: [bool; 4],
}

impl Editor {
    /// Edits `policy` (a policy serialised to JSON); `spare_endpoint` is
    /// where the endpoint edit moves `ingest-us` and where the added cluster points.
    pub(crate) fn new(policy: Value, spare_endpoint: String) -> anyhow::Result<Self> {
        let original_endpoints = cluster(&policy, MOVED_CLUSTER)?["endpoints"].clone();
        let editor = Self {
            doc: policy,
            original_endpoints,
            spare_endpoint,
            toggled: [false; 4],
        };
        // Check every path an edit touches now, not halfway through a run.
        editor.canary_steps()?;
        Ok(editor)
    }

    /// The policy as it stands.
    pub(crate) fn doc(&self) -> &Value {
        &self.doc
    }

    /// Applies the next edit of `kind` (which undoes the previous one of that kind).
    pub(crate) fn apply(&mut self, kind: Kind) -> anyhow::Result<()> {
        let slot = Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        let on = !self.toggled[slot];
        match kind {
            Kind::Spread => {
                self.doc["routing"]["spread"] = json!(if on { 0.07 } else { 0.05 });
            }
            Kind::CanaryStep => {
                let steps = self.canary_steps_mut()?;
                steps[0] = json!(if on { 2.0 } else { 1.0 });
            }
            Kind::EndpointMove => {
                let endpoints = if on {
                    json!([self.spare_endpoint])
                } else {
                    self.original_endpoints.clone()
                };
                cluster_mut(&mut self.doc, MOVED_CLUSTER)?["endpoints"] = endpoints;
            }
            Kind::ClusterAddRemove => {
                if on {
                    let mut added = cluster(&self.doc, MOVED_CLUSTER)?.clone();
                    added["name"] = json!(ADDED_CLUSTER);
                    added["endpoints"] = json!([self.spare_endpoint]);
                    array_mut(&mut self.doc["clusters"])?.push(added);
                    array_mut(&mut service_mut(&mut self.doc, SERVICE)?["placements"])?
                        .push(json!({"cluster": ADDED_CLUSTER}));
                } else {
                    array_mut(&mut self.doc["clusters"])?.retain(|c| c["name"] != ADDED_CLUSTER);
                    array_mut(&mut service_mut(&mut self.doc, SERVICE)?["placements"])?
                        .retain(|p| p["cluster"] != ADDED_CLUSTER);
                }
            }
        }
        self.toggled[slot] = on;
        Ok(())
    }

    fn canary_steps(&self) -> anyhow::Result<&Vec<Value>> {
        self.doc["services"]
            .as_array()
            .and_then(|services| services.iter().find(|s| s["name"] == SERVICE))
            .and_then(|s| s["placements"].as_array())
            .and_then(|ps| ps.iter().find_map(|p| p["canary"]["steps"].as_array()))
            .filter(|steps| !steps.is_empty())
            .ok_or_else(|| anyhow::anyhow!("the policy's `{SERVICE}` service has no canary"))
    }

    fn canary_steps_mut(&mut self) -> anyhow::Result<&mut Vec<Value>> {
        service_mut(&mut self.doc, SERVICE)?["placements"]
            .as_array_mut()
            .and_then(|ps| {
                ps.iter_mut()
                    .find_map(|p| p["canary"]["steps"].as_array_mut())
            })
            .ok_or_else(|| anyhow::anyhow!("the policy's `{SERVICE}` service has no canary"))
    }
}

fn cluster<'a>(doc: &'a Value, name: &str) -> anyhow::Result<&'a Value> {
    doc["clusters"]
        .as_array()
        .and_then(|clusters| clusters.iter().find(|c| c["name"] == name))
        .ok_or_else(|| anyhow::anyhow!("the policy has no cluster `{name}`"))
}

fn cluster_mut<'a>(doc: &'a mut Value, name: &str) -> anyhow::Result<&'a mut Value> {
    doc["clusters"]
        .as_array_mut()
        .and_then(|clusters| clusters.iter_mut().find(|c| c["name"] == name))
        .ok_or_else(|| anyhow::anyhow!("the policy has no cluster `{name}`"))
}

fn service_mut<'a>(doc: &'a mut Value, name: &str) -> anyhow::Result<&'a mut Value> {
    doc["services"]
        .as_array_mut()
        .and_then(|services| services.iter_mut().find(|s| s["name"] == name))
        .ok_or_else(|| anyhow::anyhow!("the policy has no service `{name}`"))
}

fn array_mut(value: &mut Value) -> anyhow::Result<&mut Vec<Value>> {
    value
        .as_array_mut()
        .ok_or_else(|| anyhow::anyhow!("expected a list in the policy"))
}

/// Writes `doc` to `path` as editors save: a new file, renamed into place.
/// JSON is YAML, so the policy is its own serialisation. Returns the instant
/// just before the rename, when the new content becomes visible.
pub(crate) fn write_policy(path: &Path, doc: &Value) -> anyhow::Result<Instant> {
    let staged = path.with_extension("staged");
    std::fs::write(&staged, serde_json::to_vec_pretty(doc)?)?;
    let at = Instant::now();
    std::fs::rename(&staged, path)?;
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Value {
        json!({
            "clusters": [
                {"name": "ingest-eu", "endpoints": ["127.0.0.1:1"]},
                {"name": "ingest-us", "region": "us-east", "endpoints": ["127.0.0.1:2"]}
            ],
            "services": [{"name": "ingest", "placements": [
                {"cluster": "ingest-eu", "canary": {"cluster": "c", "steps": [1.0, 100.0]}},
                {"cluster": "ingest-us"}
            ]}],
            "routing": {"spread": 0.05}
        })
    }

    #[test]
    fn every_edit_is_undone_by_the_next_of_its_kind() {
        let mut editor = Editor::new(policy(), "127.0.0.1:9".into()).unwrap();
        for kind in Kind::ALL {
            editor.apply(kind).unwrap();
            assert_ne!(editor.doc(), &policy(), "{kind:?}");
            editor.apply(kind).unwrap();
            assert_eq!(editor.doc(), &policy(), "{kind:?}");
        }
        editor.apply(Kind::ClusterAddRemove).unwrap();
        let added = cluster(editor.doc(), ADDED_CLUSTER).unwrap();
        assert_eq!(added["region"], "us-east");
        assert_eq!(added["endpoints"], json!(["127.0.0.1:9"]));
    }

    #[test]
    fn a_policy_without_the_edited_parts_is_refused() {
        assert!(Editor::new(json!({"clusters": []}), "x".into()).is_err());
    }
}
