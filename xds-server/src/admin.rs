//! The admin API (HTTP): health, status (policy, snapshot, every node's ACKs
//! and NACKs), the live feed, and the filter module for Envoys that fetch it.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::Path;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use sha2::{Digest, Sha256};
use weir_policy::Feed;

use crate::controller::Command;
use crate::otlp::Ingest;
use crate::serve::Control;
use crate::snapshot::type_url;
use crate::xds::Nodes;

/// Where the filter module is served.
pub const WASM_PATH: &str = "/v1/wasm/weir_filter.wasm";

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
}

impl AdminState {
    pub(crate) fn new(
        control: Arc<Mutex<Control>>,
        nodes: Nodes,
        wasm: Vec<u8>,
        ingest: Ingest,
    ) -> Self {
        Self {
            control,
            nodes,
            wasm: Arc::new(wasm),
            ingest,
        }
    }
}

pub(crate) fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/v1/status", get(status))
        .route("/v1/feed", get(get_feed).put(put_feed).delete(delete_feed))
        .route("/v1/rollouts", get(rollouts))
        .route("/v1/rollouts/{canary}/{command}", post(command))
        .route(WASM_PATH, get(wasm))
        // A feed is small; anything larger is refused before it is read.
        .layer(axum::extract::DefaultBodyLimit::max(1 << 20))
        .with_state(state)
}

fn busy() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "busy\n").into_response()
}

async fn status(State(state): State<AdminState>) -> Response {
    let Ok(control) = state.control.lock() else {
        return busy();
    };
    let snapshot = control.snapshot();
    let types: serde_json::Map<String, serde_json::Value> = type_url::ALL
        .iter()
        .map(|t| ((*t).to_owned(), json!(snapshot.of_type(t).version)))
        .collect();
    Json(json!({
        "policy": {
            "file": control.policy_path().display().to_string(),
            "last_error": control.last_error,
        },
        "snapshot": {"version": snapshot.version, "types": types},
        "rollouts": control.controller().rollouts(),
        "otlp": state.ingest.status(),
        "nodes": state.nodes.status(),
    }))
    .into_response()
}

async fn get_feed(State(state): State<AdminState>) -> Response {
    match state.control.lock() {
        Ok(control) => Json(control.feed()).into_response(),
        Err(_) => busy(),
    }
}

async fn put_feed(State(state): State<AdminState>, body: axum::body::Bytes) -> Response {
    let feed: Feed = match serde_json::from_slice(&body) {
        Ok(feed) => feed,
        Err(err) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"errors": [err.to_string()]})),
            )
                .into_response();
        }
    };
    let Ok(mut control) = state.control.lock() else {
        return busy();
    };
    match control.set_feed(Some(feed)) {
        Ok(version) => Json(json!({"version": version})).into_response(),
        Err(errors) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"errors": errors})),
        )
            .into_response(),
    }
}

async fn delete_feed(State(state): State<AdminState>) -> Response {
    let Ok(mut control) = state.control.lock() else {
        return busy();
    };
    match control.set_feed(None) {
        Ok(version) => Json(json!({"version": version})).into_response(),
        Err(errors) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"errors": errors})),
        )
            .into_response(),
    }
}

/// Every rollout's state and the recent decisions with their evidence.
async fn rollouts(State(state): State<AdminState>) -> Response {
    let Ok(control) = state.control.lock() else {
        return busy();
    };
    let controller = control.controller();
    Json(json!({"rollouts": controller.rollouts(), "decisions": controller.decisions()}))
        .into_response()
}

/// `pause`, `resume`, `promote` or `abort` a rollout, named by its canary cluster.
async fn command(
    State(state): State<AdminState>,
    Path((canary, command)): Path<(String, String)>,
) -> Response {
    let command: Command = match command.parse() {
        Ok(command) => command,
        Err(err) => return (StatusCode::NOT_FOUND, Json(json!({"errors": [err]}))).into_response(),
    };
    let Ok(mut control) = state.control.lock() else {
        return busy();
    };
    match control.command(&canary, command) {
        Ok(decision) => Json(json!({"decision": decision})).into_response(),
        Err(err) => (StatusCode::CONFLICT, Json(json!({"errors": [err]}))).into_response(),
    }
}

async fn wasm(State(state): State<AdminState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/wasm")],
        state.wasm.as_ref().clone(),
    )
        .into_response()
}
