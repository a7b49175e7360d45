//! Compiling a policy into the filter's configuration document.

use sha2::{Digest, Sha256};

use crate::feed::Feed;
use crate::filter_config::FilterConfig;
use crate::model::Policy;

/// The filter's configuration for a valid policy: the policy with its
/// defaults spelt out, its initial feed, and a version derived from both, so
/// that the same content always has the same version.
pub fn compile(policy: &Policy) -> FilterConfig {
    with_feed(policy, Feed::initial(policy))
}

/// The filter's configuration for a policy and a given live feed.
pub fn with_feed(policy: &Policy, feed: Feed) -> FilterConfig {
    let mut digest = Sha256::new();
    // Serialising plain data to JSON cannot fail; an empty digest input would
    // only weaken the version, never the document.
    digest.update(serde_json::to_vec(policy).unwrap_or_default());
    digest.update([0]);
    digest.update(serde_json::to_vec(&feed).unwrap_or_default());
    let hash = digest.finalize();
    let version: String = hash.iter().take(6).map(|b| format!("{b:02x}")).collect();
    FilterConfig {
        version: format!("p-{version}"),
        policy: Some(policy.clone()),
        feed: Some(feed),
        version_header: false,
    }
}
