//! The dashboard `weir serve` shows at `/`: each rollout's weight over time
//! with canary-vs-stable error rate and latency beneath it and the decisions
//! marked, the filter's admission per priority class, cluster SLA scores —
//! live, from the [`Timeline`] — and the policy simulator, which runs the
//! policy crate compiled to WebAssembly in the browser (`simulator/`).
//!
//! Two routers, which the admin API merges:
//! - [`data_router`]: `GET /v1/timeline`, `GET /v1/policy`,
//!   `GET /v1/simulator` — behind the admin token like every endpoint with
//!   data;
//! - [`page_router`]: the page (`/`, `/dashboard`), its script and style
//!   (embedded in the binary), and the simulator's module read from
//!   `--simulator-dir` (`/simulator/…`). They hold no data, so they are
//!   served without the token: a browser cannot send one when it opens a
//!   page; the page then asks for the token and sends it with each request.
//!
//! The page polls `/v1/timeline?since=MS` every second for what is new.

use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use crate::metrics_store::MetricsStore;
use crate::serving::Control;
use crate::timeline::{Observation, Timeline};

/// The simulator's ES module, as `wasm-bindgen --target web` names it.
pub const SIMULATOR_MODULE: &str = "weir_simulator.js";
/// The simulator's WebAssembly, which the module loads beside itself.
pub const SIMULATOR_WASM: &str = "weir_simulator_bg.wasm";
/// Where the simulator's files are served.
const SIMULATOR_PATH: &str = "/simulator";

/// The page and what it loads, embedded in the binary.
const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const CHARTS_JS: &str = include_str!("dashboard/charts.js");
const SIMULATOR_JS: &str = include_str!("dashboard/simulator.js");
const STYLE_CSS: &str = include_str!("dashboard/style.css");

/// The page runs only its own scripts; WebAssembly compilation must be
/// allowed for the simulator.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; frame-ancestors 'none'";

/// What the dashboard's handlers share, and what `serve` records through.
#[derive(Clone)]
pub(crate) struct Dashboard {
    control: Arc<Mutex<Control>>,
    metrics: Arc<Mutex<MetricsStore>>,
    timeline: Arc<Mutex<Timeline>>,
    simulator_dir: Arc<PathBuf>,
}

impl Dashboard {
    /// A dashboard over weir's state, serving the simulator from
    /// `simulator_dir` ([`default_simulator_dir`] when `None`).
    pub(crate) fn new(
        control: Arc<Mutex<Control>>,
        metrics: Arc<Mutex<MetricsStore>>,
        simulator_dir: Option<PathBuf>,
    ) -> Self {
        Self {
            control,
            metrics,
            timeline: Arc::new(Mutex::new(Timeline::default())),
            simulator_dir: Arc::new(simulator_dir.unwrap_or_else(default_simulator_dir)),
        }
    }

    /// Records the timeline after a controller evaluation; `control` is
    /// the state `serve` holds locked (the metrics are locked after it, in
    /// the order the controller's evaluation takes them).
    pub(crate) fn record(&self, control: &Control, now_ms: u64) -> bool {
        let admission = self
            .metrics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admission();
        let controller = control.controller();
        let (rollouts, evidence, sla) = (
            controller.rollouts(),
            controller.evidence(),
            controller.sla(),
        );
        let observed = Observation {
            rollouts: &rollouts,
            evidence: &evidence,
            decisions: controller.decisions(),
            admission: &admission,
            concurrency_limit: control.feed().concurrency_limit,
            sla: &sla,
        };
        self.timeline
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(now_ms, &observed)
    }

    /// The timeline itself (to restore it, and to save its new points).
    pub(crate) fn timeline(&self) -> std::sync::MutexGuard<'_, Timeline> {
        self.timeline.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn simulator_file(&self, name: &str) -> PathBuf {
        self.simulator_dir.join(name)
    }
}

/// `simulator/` beside the running executable: `dist/simulator` for `dist/weir`.
pub(crate) fn default_simulator_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("simulator")))
        .unwrap_or_else(|| PathBuf::from("simulator"))
}

/// The endpoints with data, to serve behind the admin token.
pub(crate) fn data_router(dashboard: Dashboard) -> Router {
    Router::new()
        .route("/v1/timeline", get(timeline))
        .route("/v1/policy", get(policy))
        .route("/v1/simulator", get(simulator_status))
        .with_state(dashboard)
}

/// The page and the simulator's files, which hold no data.
pub(crate) fn page_router(dashboard: Dashboard) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/dashboard", get(index))
        .route("/dashboard/{asset}", get(asset))
        .route(&format!("{SIMULATOR_PATH}/{{file}}"), get(simulator_file))
        .with_state(dashboard)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

#[derive(Debug, Deserialize)]
struct Since {
    /// Only what is newer than this (ms since the epoch); everything when missing.
    #[serde(default)]
    since: u64,
}

/// `GET /v1/timeline?since=MS`: the points and decision marks newer than `since`.
async fn timeline(
    State(dashboard): State<Dashboard>,
    since: Result<Query<Since>, QueryRejection>,
) -> Response {
    let Query(since) = match since {
        Ok(since) => since,
        Err(rejection) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "{}: `since` is a time in ms since the epoch",
                    rejection.body_text()
                ),
            );
        }
    };
    let view = dashboard
        .timeline
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .since(since.since);
    Json(view).into_response()
}

/// `GET /v1/policy`: the policy file's text as it is now, and whether it is
/// the one being served (`last_error` says why not).
async fn policy(State(dashboard): State<Dashboard>) -> Response {
    let (path, last_error) = {
        let control = dashboard
            .control
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        (
            control.policy_path().to_path_buf(),
            control.last_error.clone(),
        )
    };
    match tokio::fs::read_to_string(&path).await {
        Ok(text) => Json(json!({
            "file": path.display().to_string(),
            "text": text,
            "last_error": last_error,
        }))
        .into_response(),
        Err(err) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read the policy file {}: {err}", path.display()),
        ),
    }
}

/// `GET /v1/simulator`: whether the simulator's files are there, and where
/// weir looked.
async fn simulator_status(State(dashboard): State<Dashboard>) -> Response {
    let missing: Vec<String> = [SIMULATOR_MODULE, SIMULATOR_WASM]
        .iter()
        .map(|name| dashboard.simulator_file(name))
        .filter(|path| !path.is_file())
        .map(|path| path.display().to_string())
        .collect();
    Json(json!({
        "available": missing.is_empty(),
        "dir": dashboard.simulator_dir.display().to_string(),
        "module": format!("{SIMULATOR_PATH}/{SIMULATOR_MODULE}"),
        "missing": missing,
    }))
    .into_response()
}

/// A response that is never taken from a cache without asking: the page and
/// the simulator change with weir and with `make build`.
fn fresh(content_type: &'static str, body: impl IntoResponse) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

async fn index() -> Response {
    let mut response = fresh("text/html; charset=utf-8", INDEX_HTML);
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    response
}

async fn asset(Path(asset): Path<String>) -> Response {
    match asset.as_str() {
        "app.js" => fresh(JAVASCRIPT, APP_JS),
        "charts.js" => fresh(JAVASCRIPT, CHARTS_JS),
        "simulator.js" => fresh(JAVASCRIPT, SIMULATOR_JS),
        "style.css" => fresh("text/css; charset=utf-8", STYLE_CSS),
        _ => error(StatusCode::NOT_FOUND, "no such dashboard file"),
    }
}

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

/// The content type of a simulator file, by its extension; `None` for a
/// name that is not a plain file name (no paths, no hidden files).
fn simulator_content_type(name: &str) -> Option<&'static str> {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !plain {
        return None;
    }
    let extension = FsPath::new(name).extension().and_then(|e| e.to_str());
    Some(match extension {
        Some("js") => JAVASCRIPT,
        Some("wasm") => "application/wasm",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    })
}

/// `GET /simulator/FILE`: a file of `--simulator-dir`, read when asked so
/// that a rebuilt simulator is served without restarting weir.
async fn simulator_file(State(dashboard): State<Dashboard>, Path(file): Path<String>) -> Response {
    let Some(content_type) = simulator_content_type(&file) else {
        return error(StatusCode::NOT_FOUND, "no such simulator file");
    };
    let path = dashboard.simulator_file(&file);
    match tokio::fs::read(&path).await {
        Ok(bytes) => fresh(content_type, bytes),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => error(
            StatusCode::NOT_FOUND,
            format!(
                "{} does not exist: build the simulator (make build, or scripts/build-simulator.sh) \
                 or point --simulator-dir at it",
                path.display()
            ),
        ),
        Err(err) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read {}: {err}", path.display()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulator_files_are_plain_names_with_their_content_types() {
        assert_eq!(simulator_content_type(SIMULATOR_MODULE), Some(JAVASCRIPT));
        assert_eq!(
            simulator_content_type(SIMULATOR_WASM),
            Some("application/wasm")
        );
        for bad in [
            "", ".hidden", "../weir", "a/b.js", "a\\b.js", "%2e%2e", "x y.js",
        ] {
            assert_eq!(simulator_content_type(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_page_loads_only_assets_the_server_has() {
        for referenced in ["/dashboard/app.js", "/dashboard/style.css"] {
            assert!(INDEX_HTML.contains(referenced), "{referenced}");
        }
        for import in ["./charts.js", "./simulator.js"] {
            assert!(APP_JS.contains(import), "{import}");
        }
    }
}
