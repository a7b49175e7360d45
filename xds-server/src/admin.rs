//! The admin API (HTTP, JSON): health, status, rollouts and their history,
//! clusters' SLA scores, every node's ACKs and NACKs, the live feed, weir's
//! own Prometheus metrics, OTLP/HTTP metrics in, and the filter module for
//! Envoys that fetch it. `docs/api.md` documents each endpoint.
//!
//! Errors are JSON `{"error": "…"}` with the status code that fits. With
//! tokens (see [`auth`]) every endpoint but the probes and the filter module
//! requires one that allows it; [`origin`] keeps web pages from driving it.

mod auth;
mod origin;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use weir_policy::Feed;

use crate::api::{
    ClusterView, Clusters, CommandAnswer, DecisionView, History, LimitView, NodeSummary,
    NodeTypeView, NodesAnswer, RolloutDetail, RolloutSummary, Rollouts, RttView, Served,
};
use crate::controller::{Command, Decision};
use crate::metrics_store::MetricsStore;
use crate::otlp::Ingest;
use crate::replication::{Replication, forward_command};
use crate::serving::{CommandFailure, Control};
use crate::snapshot::type_url;
use crate::telemetry::{self, Origin, Scrape, Telemetry};
use crate::xds::{Nodes, rfc3339, type_name};

pub(crate) use auth::Auth;
pub use auth::AuthArgs;
pub use origin::OriginArgs;
pub(crate) use origin::OriginGuard;

/// Where the filter module is served.
pub const WASM_PATH: &str = "/v1/wasm/weir_filter.wasm";

/// Where weir's own metrics are served (Prometheus text format).
pub const PROMETHEUS_PATH: &str = "/metrics";

/// The SHA-256 of `bytes`, in hex, as Envoy's remote data sources expect it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What the admin handlers share.
#[derive(Clone)]
pub(crate) struct AdminState {
    control: Arc<Mutex<Control>>,
    nodes: Nodes,
    wasm: Arc<Vec<u8>>,
    ingest: Ingest,
    metrics: Arc<Mutex<MetricsStore>>,
    telemetry: Telemetry,
    auth: Auth,
    dashboard: crate::dashboard::Dashboard,
    replication: Replication,
    heartbeat: Arc<crate::health::Heartbeat>,
}

impl AdminState {
    #[allow(clippy::too_many_arguments)] // one for each part of weir the API shows
    pub(crate) fn new(
        control: Arc<Mutex<Control>>,
        nodes: Nodes,
        wasm: Vec<u8>,
        ingest: Ingest,
        metrics: Arc<Mutex<MetricsStore>>,
        telemetry: Telemetry,
        auth: Auth,
        dashboard: crate::dashboard::Dashboard,
        replication: Replication,
        heartbeat: Arc<crate::health::Heartbeat>,
    ) -> Self {
        Self {
            control,
            nodes,
            wasm: Arc::new(wasm),
            ingest,
            metrics,
            telemetry,
            auth,
            dashboard,
            replication,
            heartbeat,
        }
    }
}

/// Everything served on the admin address, OTLP/HTTP included; the token
/// check and the `Host`/`Origin` guard cover all of it.
pub(crate) fn router(state: AdminState, origin: OriginGuard) -> Router {
    let api = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/status", get(status))
        .route("/v1/snapshot", get(snapshot))
        .route("/v1/feed", get(get_feed).put(put_feed).delete(delete_feed))
        .route("/v1/rollouts", get(rollouts))
        .route("/v1/rollouts/{canary}", get(rollout))
        .route("/v1/rollouts/{canary}/history", get(history))
        .route("/v1/rollouts/{canary}/{command}", post(command))
        .route("/v1/clusters", get(clusters))
        .route("/v1/nodes", get(nodes))
        .route(PROMETHEUS_PATH, get(prometheus))
        .route(WASM_PATH, get(wasm))
        // A feed is small; anything larger is refused before it is read.
        .layer(axum::extract::DefaultBodyLimit::max(1 << 20))
        .with_state(state.clone());
    // Other parts of weir's HTTP surface are merged here, under the token.
    let routes = api
        .merge(state.ingest.http_router())
        .merge(crate::dashboard::data_router(state.dashboard.clone()));
    routes
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint; see docs/api.md") })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "this endpoint does not take that method; see docs/api.md",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            state.auth,
            auth::require_token,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.replication,
            name_the_leader,
        ))
        .layer(axum::middleware::from_fn_with_state(origin, origin::guard))
        // The dashboard's page and the simulator's files hold no data: served
        // without the token, which a browser cannot send when it opens a page.
        .merge(crate::dashboard::page_router(state.dashboard))
}

/// Middleware: with replicas, every answer names the replica that gave it
/// (`weir-replica`) and the leader it knows (`weir-leader`), unless a
/// forwarded answer already does.
async fn name_the_leader(
    State(replication): State<Replication>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut response = next.run(request).await;
    if replication.role() == crate::replication::Role::Single {
        return response;
    }
    let headers = response.headers_mut();
    let mut name = |key: &'static str, value: &str| {
        if let Ok(value) = header::HeaderValue::from_str(value) {
            headers.entry(key).or_insert(value);
        }
    };
    name("weir-replica", replication.id());
    if let Some(leader) = replication.leader_id() {
        name("weir-leader", &leader);
    }
    response
}

/// A JSON error: `{"error": message}`.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

/// A JSON error for several problems: `error` joins them, `errors` lists them.
fn errors(status: StatusCode, problems: Vec<String>) -> Response {
    (
        status,
        Json(json!({"error": problems.join("; "), "errors": problems})),
    )
        .into_response()
}

fn busy() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "weir's state is unavailable: a handler failed while holding it; see weir's log",
    )
}

async fn status(State(state): State<AdminState>) -> Response {
    let Ok(control) = state.control.lock() else {
        return busy();
    };
    Json(json!({
        "policy": {
            "file": control.policy_path().display().to_string(),
            "last_error": control.last_error,
        },
        "snapshot": snapshot_versions(&control.snapshot()),
        "rollouts": control.controller().rollouts(),
        "limit": control.controller().limit(),
        "state": {
            "saved": control.unsaved().is_none(),
            "error": control.unsaved(),
        },
        "otlp": state.ingest.status(),
        "nodes": state.nodes.status(),
        "envoys": envoy_counts(&state.nodes),
        "replication": replication_status(&state, &control),
    }))
    .into_response()
}

/// How many Envoys have a stream open, how many are remembered without one,
/// the streams, and how many of the nodes `status` lists.
fn envoy_counts(nodes: &Nodes) -> crate::api::EnvoyCounts {
    let counts = nodes.counts();
    let known = counts.nodes_connected + counts.nodes_disconnected;
    crate::api::EnvoyCounts {
        connected: counts.nodes_connected,
        disconnected: counts.nodes_disconnected,
        streams: counts.streams,
        listed: known.min(crate::xds::STATUS_NODES as u64),
    }
}

/// This replica's role, the leader, the lease, every replica, and the policy
/// digest this one serves.
fn replication_status(state: &AdminState, control: &Control) -> crate::api::ReplicationView {
    let mut status = state.replication.status();
    if status.role != crate::replication::Role::Single {
        status.policy = Some(control.policy_digest().to_owned());
        status.deciding = Some(control.deciding());
    }
    status
}

/// The snapshot served, its version and each type's: what `status` says of
/// it, without the rest (cheap to poll however many Envoys are connected).
async fn snapshot(State(state): State<AdminState>) -> Response {
    let Ok(control) = state.control.lock() else {
        return busy();
    };
    Json(snapshot_versions(&control.snapshot())).into_response()
}

fn snapshot_versions(snapshot: &crate::snapshot::Snapshot) -> Value {
    let types: serde_json::Map<String, Value> = type_url::ALL
        .iter()
        .map(|t| ((*t).to_owned(), json!(snapshot.of_type(t).version)))
        .collect();
    json!({"version": snapshot.version, "types": types})
}

async fn get_feed(State(state): State<AdminState>) -> Response {
    match state.control.lock() {
        Ok(control) => Json(control.feed()).into_response(),
        Err(_) => busy(),
    }
}

async fn put_feed(
    State(state): State<AdminState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(answer) = forward_command(
        &state.replication,
        axum::http::Method::PUT,
        "/v1/feed",
        &headers,
        body.clone(),
    )
    .await
    {
        return answer;
    }
    let feed: Feed = match serde_json::from_slice(&body) {
        Ok(feed) => feed,
        Err(err) => return errors(StatusCode::BAD_REQUEST, vec![err.to_string()]),
    };
    let Ok(mut control) = state.control.lock() else {
        return busy();
    };
    match control.set_feed(Some(feed)) {
        Ok(version) => Json(json!({"version": version})).into_response(),
        Err(problems) => errors(StatusCode::UNPROCESSABLE_ENTITY, problems),
    }
}

async fn delete_feed(State(state): State<AdminState>, headers: axum::http::HeaderMap) -> Response {
    if let Some(answer) = forward_command(
        &state.replication,
        axum::http::Method::DELETE,
        "/v1/feed",
        &headers,
        axum::body::Bytes::new(),
    )
    .await
    {
        return answer;
    }
    let Ok(mut control) = state.control.lock() else {
        return busy();
    };
    match control.set_feed(None) {
        Ok(version) => Json(json!({"version": version})).into_response(),
        Err(problems) => errors(StatusCode::UNPROCESSABLE_ENTITY, problems),
    }
}

/// A decision as the API shows it: its fields, its `kind`, and its time in RFC 3339.
fn decision_view(decision: &Decision) -> DecisionView {
    DecisionView {
        decision: decision.clone(),
        kind: telemetry::decision_kind(decision).to_owned(),
        at: at(decision.at_ms),
    }
}

fn at(ms: u64) -> String {
    rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
}

/// Every rollout with its latest verdict and findings, and the recent
/// decisions of all of them.
async fn rollouts(State(state): State<AdminState>) -> Response {
    let Ok(control) = state.control.lock() else {
        return busy();
    };
    let controller = control.controller();
    let evidence = controller.evidence();
    let decisions = controller.decisions();
    let rollouts = controller
        .rollouts()
        .into_iter()
        .map(|state| {
            let latest = evidence.get(&state.canary);
            let last = decisions.iter().rev().find(|d| d.canary == state.canary);
            RolloutSummary {
                verdict: latest.map(|e| e.verdict),
                findings: latest.map(|e| e.findings.clone()),
                last_decision: last.map(decision_view),
                state,
            }
        })
        .collect();
    Json(Rollouts {
        rollouts,
        decisions: decisions.iter().map(decision_view).collect(),
    })
    .into_response()
}

/// The message for a canary that is not one.
fn not_a_canary(control: &Control, canary: &str) -> Response {
    let known: Vec<String> = control
        .controller()
        .rollouts()
        .into_iter()
        .map(|r| r.canary)
        .collect();
    let known = if known.is_empty() {
        "none".to_owned()
    } else {
        known.join(", ")
    };
    error(
        StatusCode::NOT_FOUND,
        format!("`{canary}` is not the canary of any placement; canaries are: {known}"),
    )
}

/// One rollout, its latest evidence in full, and its last decision.
async fn rollout(State(state): State<AdminState>, Path(canary): Path<String>) -> Response {
    let Ok(control) = state.control.lock() else {
        return busy();
    };
    let controller = control.controller();
    let Some(rollout) = controller
        .rollouts()
        .into_iter()
        .find(|r| r.canary == canary)
    else {
        return not_a_canary(&control, &canary);
    };
    let last = controller
        .decisions()
        .iter()
        .rev()
        .find(|d| d.canary == canary)
        .map(decision_view);
    Json(RolloutDetail {
        rollout,
        evidence: controller.evidence().get(&canary).cloned(),
        last_decision: last,
    })
    .into_response()
}

#[derive(Deserialize)]
struct HistoryQuery {
    limit: Option<usize>,
}

/// A rollout's decisions, oldest first, each with its evidence; `?limit=N`
/// keeps the newest N.
async fn history(
    State(state): State<AdminState>,
    Path(canary): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Response {
    let limit = match query {
        Ok(Query(q)) => q.limit,
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("{}; `limit` is a number of decisions", err.body_text()),
            );
        }
    };
    let Ok(control) = state.control.lock() else {
        return busy();
    };
    let controller = control.controller();
    let all: Vec<&Decision> = controller
        .decisions()
        .iter()
        .filter(|d| d.canary == canary)
        .collect();
    let rollout = controller
        .rollouts()
        .into_iter()
        .find(|r| r.canary == canary);
    if all.is_empty() && rollout.is_none() {
        return not_a_canary(&control, &canary);
    }
    let skip = limit.map_or(0, |n| all.len().saturating_sub(n));
    let decisions = all[skip..].iter().map(|d| decision_view(d)).collect();
    Json(History {
        total: all.len(),
        canary,
        rollout,
        decisions,
    })
    .into_response()
}

/// `pause`, `resume`, `promote` or `abort` a rollout, named by its canary cluster.
async fn command(
    State(state): State<AdminState>,
    Path((canary, command)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
) -> Response {
    let parsed: Command = match command.parse() {
        Ok(command) => command,
        Err(err) => return error(StatusCode::NOT_FOUND, err),
    };
    let path = format!(
        "/v1/rollouts/{}/{command}",
        crate::api::path_segment(&canary)
    );
    if let Some(answer) = forward_command(
        &state.replication,
        axum::http::Method::POST,
        &path,
        &headers,
        axum::body::Bytes::new(),
    )
    .await
    {
        return answer;
    }
    let command = parsed;
    let Ok(mut control) = state.control.lock() else {
        return busy();
    };
    if !control
        .controller()
        .rollouts()
        .iter()
        .any(|r| r.canary == canary)
    {
        return not_a_canary(&control, &canary);
    }
    match control.command(&canary, command) {
        Ok(decision) => {
            state
                .telemetry
                .decisions(std::slice::from_ref(&decision), Origin::Operator);
            Json(CommandAnswer {
                decision: decision_view(&decision),
                unsaved: control.unsaved().map(|error| {
                    format!(
                        "served, not yet saved ({error}); it is saved once the store works again"
                    )
                }),
            })
            .into_response()
        }
        Err(CommandFailure::Refused(err)) => error(StatusCode::CONFLICT, err),
        Err(CommandFailure::Unavailable(err)) => error(StatusCode::SERVICE_UNAVAILABLE, err),
    }
}

/// Every cluster's SLA figures and the score served.
async fn clusters(State(state): State<AdminState>) -> Response {
    let Ok(control) = state.control.lock() else {
        return busy();
    };
    let served = control.feed();
    let score = |name: &str| served.sla_scores.get(name).copied().unwrap_or(1.0);
    let mut clusters: BTreeMap<String, ClusterView> = control
        .controller()
        .sla()
        .into_iter()
        .map(|sla| {
            let view = ClusterView {
                score: score(&sla.cluster),
                published: Some(sla.published),
                smoothed: Some(sla.smoothed),
                raw: sla.raw,
                p99_ms: sla.p99_ms,
                target_p99_ms: sla.target_p99_ms,
                rtt: Vec::new(),
                cluster: sla.cluster.clone(),
            };
            (sla.cluster, view)
        })
        .collect();
    // A score pinned for a cluster the controller does not score.
    for (name, score) in &served.sla_scores {
        clusters.entry(name.clone()).or_insert_with(|| ClusterView {
            cluster: name.clone(),
            score: *score,
            published: None,
            smoothed: None,
            raw: None,
            p99_ms: None,
            target_p99_ms: None,
            rtt: Vec::new(),
        });
    }
    let rtt = rtt_views(control.policy(), &served, &control.controller().rtt());
    for (name, views) in rtt {
        if let Some(view) = clusters.get_mut(&name) {
            view.rtt = views;
        }
    }
    // The limit admission runs under, beside the controller's view of it.
    Json(Clusters {
        clusters: clusters.into_values().collect(),
        limit: LimitView {
            status: control.controller().limit(),
            served: served.concurrency_limit,
        },
    })
    .into_response()
}

/// Each cluster's RTT from every client region that has one, table or measured.
fn rtt_views(
    policy: &weir_policy::Policy,
    served: &weir_policy::Feed,
    measured: &[crate::controller::RttStatus],
) -> BTreeMap<String, Vec<RttView>> {
    let table = weir_policy::engine::RttTable::of(policy);
    policy
        .clusters
        .iter()
        .map(|cluster| {
            let views = table
                .regions()
                .iter()
                .filter_map(|region| {
                    let table_ms = table.between(region, &cluster.region);
                    let measured_ms = served
                        .rtt_ms
                        .get(region)
                        .and_then(|row| row.get(&cluster.name))
                        .copied();
                    let connects = measured
                        .iter()
                        .find(|m| &m.region == region && m.cluster == cluster.name)
                        .map_or(0, |m| m.connects);
                    let used_ms = measured_ms.or(table_ms);
                    used_ms.is_some().then(|| RttView {
                        region: region.clone(),
                        table_ms,
                        measured_ms,
                        connects,
                        used_ms,
                    })
                })
                .collect();
            (cluster.name.clone(), views)
        })
        .collect()
}

#[derive(Deserialize)]
struct NodesQuery {
    limit: Option<usize>,
    after: Option<String>,
}

/// Nodes per page of `GET /v1/nodes` unless `?limit=` says fewer, and at most.
const NODES_PAGE: usize = 1000;

/// The nodes by id, a page at a time (`?limit=N&after=ID`): per type (by
/// its short name) what each ACKed, its standing NACK, and whether it runs
/// the version served now.
async fn nodes(
    State(state): State<AdminState>,
    query: Result<Query<NodesQuery>, QueryRejection>,
) -> Response {
    let query = match query {
        Ok(Query(q)) => q,
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "{}; `limit` is a number of nodes, `after` a node id",
                    err.body_text()
                ),
            );
        }
    };
    let limit = query.limit.unwrap_or(NODES_PAGE).clamp(1, NODES_PAGE);
    let snapshot = match state.control.lock() {
        Ok(control) => control.snapshot(),
        Err(_) => return busy(),
    };
    let serving: BTreeMap<String, String> = type_url::ALL
        .iter()
        .filter_map(|t| {
            Some((
                type_name(t)?.to_owned(),
                snapshot.of_type(t).version.clone(),
            ))
        })
        .collect();
    let mut page = state.nodes.page(query.after.as_deref(), limit + 1);
    let next = (page.len() > limit).then(|| {
        page.truncate(limit);
        page.last().map(|n| n.id.clone()).unwrap_or_default()
    });
    let nodes = page
        .into_iter()
        .map(|node| {
            let types: BTreeMap<String, NodeTypeView> = node
                .types
                .into_iter()
                .map(|(url, view)| {
                    let name = type_name(&url).map_or_else(|| url.clone(), str::to_owned);
                    let in_sync = view.nack.is_none()
                        && view.acked.as_ref().map(|a| &a.version) == serving.get(&name);
                    let entry = NodeTypeView {
                        type_url: url,
                        acked: view.acked,
                        nack: view.nack,
                        in_sync,
                    };
                    (name, entry)
                })
                .collect();
            NodeSummary {
                connected: node.streams > 0,
                in_sync: !types.is_empty() && types.values().all(|t| t.in_sync),
                id: node.id,
                streams: node.streams,
                last_request: node.last_request,
                types,
                last_nack: node.last_nack,
            }
        })
        .collect();
    Json(NodesAnswer {
        snapshot: Served {
            version: snapshot.version.clone(),
            types: serving,
        },
        nodes,
        next,
    })
    .into_response()
}

/// Why weir cannot go on by itself, if it cannot: then its orchestrator
/// should restart it.
fn liveness_problems(state: &AdminState) -> Vec<String> {
    let mut problems = Vec::new();
    if state.control.is_poisoned() {
        problems.push(
            "a panic left the serving state half-changed: restart weir (Envoys keep their configuration; the saved state is resumed)"
                .to_owned(),
        );
    }
    if let Some(since) = state.heartbeat.stalled() {
        problems.push(format!(
            "the control loop has not run for {:.1} s",
            since.as_secs_f64()
        ));
    }
    problems
}

/// Liveness: `ok`, or 503 with what is wrong.
async fn healthz(State(state): State<AdminState>) -> Response {
    let problems = liveness_problems(&state);
    if problems.is_empty() {
        return "ok\n".into_response();
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("failing: {}\n", problems.join("; ")),
    )
        .into_response()
}

/// Readiness: alive, and able to keep what it decides. 503 with the
/// problems otherwise.
async fn readyz(State(state): State<AdminState>) -> Response {
    let mut problems = liveness_problems(&state);
    if let Ok(control) = state.control.lock()
        && let Some(error) = control.unsaved()
    {
        problems.push(format!("the controller's state cannot be saved: {error}"));
    }
    if let Some(error) = state.replication.problem() {
        problems.push(format!("replication: {error}"));
    }
    let status = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let answer = crate::api::ReadinessView {
        ready: problems.is_empty(),
        problems,
    };
    (status, Json(answer)).into_response()
}

/// Weir's own metrics, in the Prometheus text format.
async fn prometheus(State(state): State<AdminState>) -> Response {
    let mut scrape = Scrape {
        xds: state.nodes.counts(),
        otlp: state.ingest.status(),
        ack_latency: Some(state.nodes.ack_latency()),
        ..Scrape::default()
    };
    let text = {
        let Ok(control) = state.control.lock() else {
            return busy();
        };
        let controller = control.controller();
        scrape.rollouts = controller.rollouts();
        scrape.verdicts = controller
            .evidence()
            .into_iter()
            .map(|(canary, e)| (canary, e.verdict))
            .collect();
        scrape.sla = controller.sla();
        scrape.feed = Some(control.feed());
        scrape.policy_error = control.last_error.is_some();
        scrape.admission = Some(
            state
                .metrics
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .admission(),
        );
        // Rendered under the lock: the counters the control loop moves
        // (policy reloads and rejections, decisions) then agree with the
        // state read above, as one scrape should.
        telemetry::render(&state.telemetry, &scrape)
    };
    ([(header::CONTENT_TYPE, telemetry::CONTENT_TYPE)], text).into_response()
}

async fn wasm(State(state): State<AdminState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/wasm")],
        state.wasm.as_ref().clone(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;
    use crate::health::Heartbeat;
    use crate::store::RedbStore;

    /// The admin API of a weir deciding on the example policy, served on a
    /// loopback port; its serving state, to break.
    async fn served(dir: &std::path::Path) -> (SocketAddr, Arc<Mutex<Control>>) {
        let store = RedbStore::open(dir.join("state.redb")).unwrap();
        let control = Arc::new(Mutex::new(crate::serving::testing::control_on(Box::new(
            store,
        ))));
        let metrics = Arc::new(Mutex::new(MetricsStore::new(60_000)));
        let address: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let state = AdminState::new(
            Arc::clone(&control),
            Nodes::default(),
            Vec::new(),
            Ingest::new(Arc::clone(&metrics), crate::serving::now_ms),
            Arc::clone(&metrics),
            Telemetry::default(),
            Auth::new(&AuthArgs::default(), address).unwrap(),
            crate::dashboard::Dashboard::new(Arc::clone(&control), metrics, None),
            Replication::single(),
            Arc::new(Heartbeat::new(Duration::from_secs(60))),
        );
        let listener = tokio::net::TcpListener::bind(address).await.unwrap();
        let bound = listener.local_addr().unwrap();
        let router = router(state, OriginGuard::new(&OriginArgs::default(), false));
        tokio::spawn(async move { axum::serve(listener, router).await });
        (bound, control)
    }

    async fn get(address: SocketAddr, path: &str) -> (u16, String) {
        let response = reqwest::get(format!("http://{address}{path}"))
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    #[tokio::test]
    async fn a_panic_while_the_serving_state_is_held_fails_health_and_readiness() {
        let dir = tempfile::tempdir().unwrap();
        let (address, control) = served(dir.path()).await;
        assert_eq!(get(address, "/healthz").await, (200, "ok\n".to_owned()));
        assert_eq!(get(address, "/readyz").await.0, 200);

        // A handler panicking half-way through a change of the serving state.
        let held = Arc::clone(&control);
        let panicked = std::thread::spawn(move || {
            let _guard = held.lock().unwrap();
            panic!("injected: a handler failed while holding the serving state");
        })
        .join();
        assert!(panicked.is_err());

        let (status, body) = get(address, "/healthz").await;
        assert_eq!(status, 503, "{body}");
        assert!(
            body.contains("a panic left the serving state half-changed"),
            "{body}"
        );
        let (status, body) = get(address, "/readyz").await;
        assert_eq!(status, 503, "{body}");
        // The handlers that need the state say so rather than hang or panic.
        assert_eq!(get(address, "/v1/status").await.0, 503);
    }
}
