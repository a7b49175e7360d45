//! The admin API (HTTP): health, status (policy, snapshot, every node's ACKs
//! and NACKs), the live feed, and the filter module for Envoys that fetch it.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use sha2::{Digest, Sha256};
use weir_policy::Feed;

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
}

impl AdminState {
    pub(crate) fn new(control: Arc<Mutex<Control>>, nodes: Nodes, wasm: Vec<u8>) -> Self {
        Self {
            control,
            nodes,
            wasm: Arc::new(wasm),
        }
    }
}

pub(crate) fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/v1/status", get(status))
        .route("/v1/feed", get(get_feed).put(put_feed))
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
    match control.set_feed(feed) {
        Ok(version) => Json(json!({"version": version})).into_response(),
        Err(errors) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"errors": errors})),
        )
            .into_response(),
    }
}

async fn wasm(State(state): State<AdminState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/wasm")],
        state.wasm.as_ref().clone(),
    )
        .into_response()
}
