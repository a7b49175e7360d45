//! What a follower hands to the leader: operators' commands, as they came,
//! and the OTLP metrics its Envoys report, batched.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;
use serde_json::{Value, json};

use super::{CommandTarget, ReplicaInfo, Replication};

/// Marks a request one replica forwarded to another: never forwarded again.
pub(crate) const FORWARDED: &str = "weir-forwarded";

/// How often a follower sends the leader what its Envoys reported: the most
/// it adds to the leader's reaction time, beside one HTTP round trip.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// The most a follower holds for the leader between two flushes; beyond
/// it, exports are dropped (and counted) until the leader takes them.
const MAX_PENDING_BYTES: usize = 8 << 20;

/// One forwarded request stays under the leader's OTLP request limit.
const MAX_BATCH_BYTES: usize = crate::otlp::MAX_REQUEST_BYTES / 2;

/// Sends `method path` with its body and `authorization` to the leader and
/// answers with the leader's answer; `None` when this replica decides.
pub(crate) async fn forward_command(
    replication: &Replication,
    method: Method,
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Option<Response> {
    let leader = match replication.command_target() {
        CommandTarget::Here => return None,
        CommandTarget::Nobody => {
            return Some(unavailable(
                "no replica leads right now (an election is under way): try again in a few seconds",
            ));
        }
        CommandTarget::Leader(leader) => leader,
    };
    if headers.contains_key(FORWARDED) {
        return Some(unavailable(
            "forwarded to a replica that does not lead: the leadership is changing, try again",
        ));
    }
    Some(send(replication, &leader, method, path, headers, body).await)
}

async fn send(
    replication: &Replication,
    leader: &ReplicaInfo,
    method: Method,
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let Some((client, url)) = replication.http(leader, path) else {
        return unavailable("this weir has no replicas to forward to");
    };
    let mut pass: Vec<(header::HeaderName, header::HeaderValue)> = Vec::new();
    if let Ok(id) = header::HeaderValue::from_str(replication.id()) {
        pass.push((header::HeaderName::from_static(FORWARDED), id));
    }
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE] {
        if let Some(value) = headers.get(&name) {
            pass.push((name, value.clone()));
        }
    }
    let answer = match crate::http_client::request(method, &url, &pass, body) {
        Ok(request) => client.send(request).await.map_err(anyhow::Error::from),
        Err(err) => Err(err),
    };
    match answer {
        Ok(answer) => (
            answer.status,
            [(header::CONTENT_TYPE, "application/json")],
            answer.body,
        )
            .into_response(),
        Err(err) => unavailable(&format!(
            "the leader ({} at {}) did not answer: {err:#}; try again",
            leader.id, leader.admin
        )),
    }
}

fn unavailable(message: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({"error": message})),
    )
        .into_response()
}

/// A follower's OTLP exports on their way to the leader.
#[derive(Clone)]
pub(crate) struct Forwarder {
    inner: Arc<ForwarderInner>,
}

struct ForwarderInner {
    replication: Replication,
    pending: Mutex<Pending>,
    forwarded: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
}

#[derive(Default)]
struct Pending {
    request: ExportMetricsServiceRequest,
    bytes: usize,
    /// The exports merged into `request`.
    exports: u64,
}

impl Forwarder {
    pub(crate) fn new(replication: Replication) -> Self {
        Self {
            inner: Arc::new(ForwarderInner {
                replication,
                pending: Mutex::default(),
                forwarded: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                failed: AtomicU64::new(0),
            }),
        }
    }

    /// Keeps `request` for the leader if this replica follows one.
    pub(crate) fn offer(&self, request: &ExportMetricsServiceRequest) {
        if !matches!(
            self.inner.replication.command_target(),
            CommandTarget::Leader(_)
        ) {
            return;
        }
        let size = request.encoded_len();
        let mut pending = self.pending();
        if pending.bytes.saturating_add(size) > MAX_PENDING_BYTES {
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        pending
            .request
            .resource_metrics
            .extend(request.resource_metrics.iter().cloned());
        pending.bytes = pending.bytes.saturating_add(size);
        pending.exports += 1;
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.inner
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends what is pending every [`FLUSH_EVERY`], for ever.
    pub(crate) async fn run(self) {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.flush().await;
        }
    }

    async fn flush(&self) {
        let pending = std::mem::take(&mut *self.pending());
        if pending.request.resource_metrics.is_empty() {
            return;
        }
        let CommandTarget::Leader(leader) = self.inner.replication.command_target() else {
            // The leadership moved here (or is changing): these were already
            // counted locally, where this replica now decides or nobody does.
            self.inner
                .dropped
                .fetch_add(pending.exports, Ordering::Relaxed);
            return;
        };
        for batch in batches(pending.request) {
            match self.post(&leader, batch).await {
                Ok(()) => self.inner.forwarded.fetch_add(1, Ordering::Relaxed),
                Err(err) => {
                    tracing::warn!(leader = %leader.id, "OTLP metrics not forwarded to the leader: {err:#}");
                    self.inner.failed.fetch_add(1, Ordering::Relaxed)
                }
            };
        }
    }

    async fn post(&self, leader: &ReplicaInfo, batch: Vec<u8>) -> anyhow::Result<()> {
        let replication = &self.inner.replication;
        let Some((client, url)) = replication.http(leader, "/v1/metrics") else {
            anyhow::bail!("this weir has no replicas to forward to");
        };
        let mut headers = vec![
            (
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/x-protobuf"),
            ),
            (
                header::HeaderName::from_static(FORWARDED),
                header::HeaderValue::from_str(replication.id())?,
            ),
        ];
        if let Some(token) = replication.token() {
            let bearer = header::HeaderValue::from_str(&format!("Bearer {token}"))?;
            headers.push((header::AUTHORIZATION, bearer));
        }
        let request = crate::http_client::request(Method::POST, &url, &headers, batch.into())?;
        let answer = client.send(request).await?;
        if !answer.status.is_success() {
            anyhow::bail!("the leader answered {}", answer.status);
        }
        Ok(())
    }

    /// `forwarding` in `GET /v1/status`.
    pub(crate) fn status(&self) -> Value {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({
            "batches_forwarded": n(&self.inner.forwarded),
            "batches_failed": n(&self.inner.failed),
            "exports_dropped": n(&self.inner.dropped),
            "flush_interval_ms": FLUSH_EVERY.as_millis(),
        })
    }
}

/// `request`'s resources in encoded requests of at most [`MAX_BATCH_BYTES`]
/// (one resource larger than that goes alone).
fn batches(request: ExportMetricsServiceRequest) -> Vec<Vec<u8>> {
    let mut batches = Vec::new();
    let mut current = ExportMetricsServiceRequest::default();
    let mut size = 0;
    for resource in request.resource_metrics {
        let len = resource.encoded_len();
        if size > 0 && size + len > MAX_BATCH_BYTES {
            batches.push(std::mem::take(&mut current).encode_to_vec());
            size = 0;
        }
        size += len;
        current.resource_metrics.push(resource);
    }
    if !current.resource_metrics.is_empty() {
        batches.push(current.encode_to_vec());
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
    use opentelemetry_proto::tonic::resource::v1::Resource;

    fn resource(attributes: usize) -> ResourceMetrics {
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
        ResourceMetrics {
            resource: Some(Resource {
                attributes: (0..attributes)
                    .map(|i| KeyValue {
                        key: format!("k{i}"),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue("v".repeat(1000))),
                        }),
                        ..KeyValue::default()
                    })
                    .collect(),
                ..Resource::default()
            }),
            ..ResourceMetrics::default()
        }
    }

    #[test]
    fn batches_stay_under_the_leaders_limit_and_keep_every_resource() {
        let request = ExportMetricsServiceRequest {
            resource_metrics: (0..10).map(|_| resource(500)).collect(),
        };
        let batches = batches(request);
        assert!(batches.len() > 1, "{}", batches.len());
        let mut resources = 0;
        for batch in &batches {
            assert!(batch.len() <= MAX_BATCH_BYTES, "{}", batch.len());
            resources += ExportMetricsServiceRequest::decode(batch.as_slice())
                .unwrap()
                .resource_metrics
                .len();
        }
        assert_eq!(resources, 10);
    }

    #[test]
    fn a_replica_that_follows_no_leader_keeps_nothing() {
        let forwarder = Forwarder::new(Replication::single());
        forwarder.offer(&ExportMetricsServiceRequest {
            resource_metrics: vec![resource(1)],
        });
        assert_eq!(forwarder.pending().bytes, 0);
    }
}
