//! `weir serve`: the control server. It turns the policy file (and its live
//! feed) into snapshots, serves them to Envoys over ADS, and keeps serving the
//! last good one whatever happens to the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use clap::{Args, ValueEnum};
use tokio::sync::watch;
use weir_policy::{Feed, Policy};

use crate::admin;
use crate::controller::{Command, Controller, Decision};
use crate::metrics_store::MetricsStore;
use crate::otlp::Ingest;
use crate::policy_source::{self, InvalidPolicy, Watcher};
use crate::resources::{self, HostPort, Options, WasmSource};
use crate::snapshot::Snapshot;
use crate::state_store::StateStore;
use crate::telemetry::{Origin, Telemetry};
use crate::xds::{AdsServer, Nodes};

/// How long metrics samples are kept: several analysis windows.
const METRICS_RETENTION_MS: u64 = 60_000;

/// Evaluations between two saves of the rollout states when nothing else
/// made one (about 2 s at the default interval).
const CHECKPOINT_EVERY: u64 = 8;

/// Flags of `weir serve`; each can also be set by the environment variable named.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The policy file to serve; it is watched, and valid edits are applied.
    #[arg(long, env = "WEIR_POLICY")]
    pub policy: PathBuf,
    /// Address of the ADS (gRPC) server Envoys connect to.
    #[arg(long, env = "WEIR_XDS_ADDRESS", default_value = "127.0.0.1:18000")]
    pub xds_address: SocketAddr,
    /// Address of the HTTP admin API (status, feed, the wasm module).
    #[arg(long, env = "WEIR_ADMIN_ADDRESS", default_value = "127.0.0.1:18001")]
    pub admin_address: SocketAddr,
    /// Where Envoy listens for device traffic.
    #[arg(long, env = "WEIR_LISTENER_ADDRESS", default_value = "127.0.0.1:10000")]
    pub listener_address: SocketAddr,
    /// The filter module.
    #[arg(long, env = "WEIR_WASM", default_value = "dist/weir_filter.wasm")]
    pub wasm: PathBuf,
    /// How Envoys get the module: `local` (a path on their host) or `http`
    /// (fetched from this server's admin API, checked by its sha256).
    #[arg(long, env = "WEIR_WASM_DELIVERY", value_enum, default_value_t = WasmDelivery::Local)]
    pub wasm_delivery: WasmDelivery,
    /// For `--wasm-delivery http`: the admin API as Envoys reach it, `host:port`
    /// with an IP address or a DNS name (default: `--admin-address`).
    #[arg(long, env = "WEIR_WASM_SERVER")]
    pub wasm_server: Option<HostPort>,
    /// Have the filter stamp every response with `x-weir-filter: <filter
    /// version>` (off by default: clients need not learn what runs).
    #[arg(long, env = "WEIR_VERSION_HEADER")]
    pub version_header: bool,
    /// Write the bound addresses here as JSON once serving (for supervisors and tests).
    #[arg(long, env = "WEIR_READY_FILE")]
    pub ready_file: Option<PathBuf>,
    /// The embedded database of rollout states and decisions; a restarted
    /// `weir` resumes every rollout from it.
    #[arg(long, env = "WEIR_STATE", default_value = "weir-state.redb")]
    pub state: PathBuf,
    /// How often the controller evaluates the metrics, in milliseconds.
    #[arg(long, env = "WEIR_CONTROL_INTERVAL_MS", default_value_t = 250)]
    pub control_interval_ms: u64,
    /// The admin API's bearer token.
    #[command(flatten)]
    pub admin_auth: admin::AuthArgs,
    /// The xDS port's bearer token (ADS and OTLP/gRPC).
    #[command(flatten)]
    pub xds_auth: crate::xds::XdsAuthArgs,
    /// Where the dashboard's policy simulator is (`weir_simulator.js` and its
    /// `.wasm`); default: `simulator/` beside the weir executable.
    #[arg(long, env = "WEIR_SIMULATOR_DIR")]
    pub simulator_dir: Option<PathBuf>,
}

/// Milliseconds since the epoch, the controller's and the metrics' clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How Envoys get the filter module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WasmDelivery {
    /// A file path on the Envoy's host.
    Local,
    /// Over HTTP from `weir`, with its sha256.
    Http,
}

/// What is being served, and what went wrong last.
pub(crate) struct Control {
    policy_path: PathBuf,
    policy: Policy,
    /// Feed values an operator pinned through the admin API; they win over the
    /// controller's until cleared or until they no longer fit the policy.
    feed_override: Option<Feed>,
    options: Options,
    snapshots: watch::Sender<Arc<Snapshot>>,
    controller: Controller,
    state: StateStore,
    metrics: Arc<Mutex<MetricsStore>>,
    evaluations: u64,
    telemetry: Telemetry,
    /// The last problem with the policy file or a snapshot, cleared by the next success.
    pub(crate) last_error: Option<String>,
}

impl Control {
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshots.borrow().clone()
    }

    pub(crate) fn policy_path(&self) -> &Path {
        &self.policy_path
    }

    pub(crate) fn controller(&self) -> &Controller {
        &self.controller
    }

    /// The feed served: the controller's, with the operator's pinned values over it.
    pub(crate) fn feed(&self) -> Feed {
        let mut feed = self.controller.feed();
        if let Some(pinned) = &self.feed_override {
            feed.canary_weights.extend(pinned.canary_weights.clone());
            feed.sla_scores.extend(pinned.sla_scores.clone());
            if pinned.concurrency_limit.is_some() {
                feed.concurrency_limit = pinned.concurrency_limit;
            }
        }
        feed
    }

    /// Pins feed values (`None` clears them); nothing changes if they do not fit the policy.
    pub(crate) fn set_feed(&mut self, pinned: Option<Feed>) -> Result<String, Vec<String>> {
        if let Some(feed) = &pinned {
            let problems = feed.validate(&self.policy);
            if !problems.is_empty() {
                return Err(problems.iter().map(ToString::to_string).collect());
            }
        }
        let previous = std::mem::replace(&mut self.feed_override, pinned);
        self.rebuild()
            .inspect_err(|_| self.feed_override = previous)
            .map_err(|e| vec![e])
    }

    /// An operator's command on a rollout: recorded, persisted, then pushed.
    pub(crate) fn command(&mut self, canary: &str, command: Command) -> Result<Decision, String> {
        let decision = self.controller.command(canary, command, now_ms())?;
        self.state
            .save(
                &self.controller.rollouts(),
                std::slice::from_ref(&decision),
                &self.controller.scores(),
            )
            .map_err(|e| format!("{e:#}"))?;
        tracing::info!(canary, ?command, to = ?decision.to, weight_bp = decision.weight_bp, "rollout command");
        self.rebuild()?;
        Ok(decision)
    }

    /// One evaluation of the controller; a new feed is persisted, then pushed.
    fn control(&mut self, now: u64) {
        let evaluation = {
            let Ok(mut metrics) = self.metrics.lock() else {
                return;
            };
            metrics.prune(now);
            self.controller.evaluate(&metrics, now)
        };
        self.evaluations = self.evaluations.wrapping_add(1);
        // Hold progress is saved now and then even without a decision, so a
        // restart loses at most a few seconds of it.
        let checkpoint = self.evaluations.is_multiple_of(CHECKPOINT_EVERY);
        if evaluation.decisions.is_empty() && !evaluation.changed && !checkpoint {
            return;
        }
        // Written before it is pushed: a restart resumes exactly here.
        if let Err(err) = self.state.save(
            &self.controller.rollouts(),
            &evaluation.decisions,
            &self.controller.scores(),
        ) {
            tracing::error!("{err:#}; the new feed is not pushed");
            self.last_error = Some(format!("{err:#}"));
            return;
        }
        self.telemetry
            .decisions(&evaluation.decisions, Origin::Controller);
        for decision in &evaluation.decisions {
            tracing::info!(
                canary = %decision.canary,
                from = ?decision.from,
                to = ?decision.to,
                weight_bp = decision.weight_bp,
                reason = %decision.reason,
                "rollout decision"
            );
        }
        if (evaluation.changed || !evaluation.decisions.is_empty())
            && let Err(err) = self.rebuild()
        {
            tracing::error!(error = %err, "the controller's feed was not served");
        }
    }

    fn rebuild(&mut self) -> Result<String, String> {
        let snapshot = resources::build(&self.policy, &self.feed(), &self.options)
            .map_err(|e| e.to_string())?;
        Ok(self.publish(snapshot))
    }

    /// Applies a new policy text; an invalid one changes nothing.
    fn apply_policy_text(&mut self, text: &str) {
        let policy = match policy_source::parse(&self.policy_path, text) {
            Ok(policy) => policy,
            Err(invalid) => return self.reject(&invalid),
        };
        // A policy that cannot make a consistent snapshot is refused before
        // anything (the controller's rollouts included) moves to it.
        if let Err(err) = resources::build(&policy, &Feed::initial(&policy), &self.options) {
            tracing::error!(file = %self.policy_path.display(), error = %err, "policy rejected: the last good one keeps serving");
            self.telemetry.policy_rejected();
            self.last_error = Some(err.to_string());
            return;
        }
        // Pinned values survive an edit where they still fit the new policy.
        self.feed_override = self
            .feed_override
            .take()
            .filter(|f| f.validate(&policy).is_empty());
        self.controller.set_policy(&policy, now_ms());
        self.policy = policy;
        self.telemetry.policy_applied();
        match self.rebuild() {
            Ok(version) => {
                tracing::info!(file = %self.policy_path.display(), version, "policy applied")
            }
            Err(err) => self.last_error = Some(err),
        }
    }

    fn reject(&mut self, invalid: &InvalidPolicy) {
        tracing::error!(
            file = %self.policy_path.display(),
            "policy rejected: the last good one keeps serving:\n{invalid}"
        );
        self.telemetry.policy_rejected();
        self.last_error = Some(invalid.to_string());
    }

    fn publish(&mut self, snapshot: Snapshot) -> String {
        let version = snapshot.version.clone();
        self.last_error = None;
        // Publishing the same content again would only make streams re-check it.
        if self.snapshots.borrow().version != version {
            self.snapshots.send_replace(Arc::new(snapshot));
        }
        version
    }
}

/// Saves the dashboard's new timeline points every [`TimelineSaver::EVERY`]
/// points, so that a restarted weir draws its recent past again.
struct TimelineSaver {
    saved_until_ms: u64,
    unsaved: usize,
}

impl TimelineSaver {
    const EVERY: usize = 5;

    fn point_added(
        &mut self,
        control: &Control,
        dashboard: &crate::dashboard::Dashboard,
        now: u64,
    ) {
        self.unsaved += 1;
        if self.unsaved < Self::EVERY {
            return;
        }
        let (points, horizon) = {
            let timeline = dashboard.timeline();
            (
                timeline.points_after(self.saved_until_ms),
                timeline.horizon_ms(now),
            )
        };
        match control.state.save_timeline(&points, horizon) {
            Ok(()) => {
                self.unsaved = 0;
                self.saved_until_ms = points.last().map_or(self.saved_until_ms, |p| p.at_ms);
            }
            Err(err) => tracing::warn!("the dashboard's timeline is not saved: {err:#}"),
        }
    }
}

/// Runs the server until the process is stopped.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let auth = admin::Auth::new(&args.admin_auth, args.admin_address)?;
    let xds_auth = crate::xds::XdsAuth::new(&args.xds_auth, args.xds_address)?;
    let (policy, text) =
        policy_source::read(&args.policy).map_err(|invalid| anyhow::anyhow!("{invalid}"))?;
    let wasm_bytes = std::fs::read(&args.wasm).map_err(|err| {
        anyhow::anyhow!(
            "cannot read the filter module {}: {err}",
            args.wasm.display()
        )
    })?;
    let xds_listener = tokio::net::TcpListener::bind(args.xds_address).await?;
    let admin_listener = tokio::net::TcpListener::bind(args.admin_address).await?;
    let (xds_addr, admin_addr) = (xds_listener.local_addr()?, admin_listener.local_addr()?);

    let wasm = match args.wasm_delivery {
        WasmDelivery::Local => WasmSource::Local(std::fs::canonicalize(&args.wasm)?),
        WasmDelivery::Http => {
            let server = args.wasm_server.unwrap_or_else(|| admin_addr.into());
            WasmSource::Remote {
                uri: format!("http://{server}{}", admin::WASM_PATH),
                sha256: admin::sha256_hex(&wasm_bytes),
                server,
            }
        }
    };
    let options = Options {
        listener: args.listener_address,
        wasm,
        version_header: args.version_header,
    };
    let state = StateStore::open(&args.state)?;
    let saved = state.load()?;
    if !saved.rollouts.is_empty() {
        tracing::info!(rollouts = saved.rollouts.len(), file = %args.state.display(), "resuming rollouts");
    }
    let mut controller = Controller::new(&policy, saved.rollouts, now_ms());
    controller.restore_history(saved.decisions);
    controller.restore_scores(&saved.scores);
    let metrics = Arc::new(Mutex::new(MetricsStore::new(METRICS_RETENTION_MS)));
    let snapshot = resources::build(&policy, &controller.feed(), &options)?;
    tracing::info!(version = %snapshot.version, file = %args.policy.display(), "policy loaded");
    let (snapshots, receiver) = watch::channel(Arc::new(snapshot));
    let telemetry = Telemetry::default();
    let control = Arc::new(Mutex::new(Control {
        policy_path: args.policy.clone(),
        policy,
        feed_override: None,
        options,
        snapshots,
        controller,
        state,
        metrics: Arc::clone(&metrics),
        evaluations: 0,
        telemetry: telemetry.clone(),
        last_error: None,
    }));
    let ingest = Ingest::new(Arc::clone(&metrics), now_ms);
    let nodes = Nodes::default();

    let ads = AdsServer::new(receiver, nodes.clone()).into_service();
    // OTLP/gRPC shares the ADS port: Envoy's stats sink reaches weir through
    // the same cluster as its configuration.
    let xds = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(tonic::service::InterceptorLayer::new(xds_auth))
            .add_service(ads)
            .add_service(ingest.grpc_service())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(xds_listener)),
    );
    let dashboard = crate::dashboard::Dashboard::new(
        Arc::clone(&control),
        Arc::clone(&metrics),
        args.simulator_dir.clone(),
    );
    let saved_until_ms = saved.timeline.last().map_or(0, |p| p.at_ms);
    dashboard.timeline().restore(now_ms(), saved.timeline);
    let mut timeline_saver = TimelineSaver {
        saved_until_ms,
        unsaved: 0,
    };
    // OTLP/HTTP is served beside the admin API.
    let admin_state = admin::AdminState::new(
        Arc::clone(&control),
        nodes,
        wasm_bytes,
        ingest.clone(),
        metrics,
        telemetry,
        auth,
        dashboard.clone(),
    );
    let admin_router = admin::router(admin_state);
    let admin = tokio::spawn(async move { axum::serve(admin_listener, admin_router).await });
    tracing::info!(%xds_addr, %admin_addr, "serving");
    if let Some(path) = &args.ready_file {
        let ready =
            serde_json::json!({"xds": xds_addr.to_string(), "admin": admin_addr.to_string()});
        let staged = path.with_extension("staged");
        std::fs::write(&staged, ready.to_string())?;
        std::fs::rename(&staged, path)?;
    }

    let mut watcher = Watcher::new(&args.policy, &text);
    let mut tick = tokio::time::interval(policy_source::POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut xds, mut admin) = (xds, admin);
    let mut control_tick = tokio::time::interval(std::time::Duration::from_millis(
        args.control_interval_ms.max(10),
    ));
    control_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Some(text) = watcher.poll()
                    && let Ok(mut control) = control.lock() {
                        control.apply_policy_text(&text);
                    }
            }
            _ = control_tick.tick() => {
                if let Ok(mut control) = control.lock() {
                    let now = now_ms();
                    control.control(now);
                    if dashboard.record(&control, now) {
                        timeline_saver.point_added(&control, &dashboard, now);
                    }
                }
            }
            stopped = &mut xds => anyhow::bail!("the xDS server stopped: {stopped:?}"),
            stopped = &mut admin => anyhow::bail!("the admin server stopped: {stopped:?}"),
        }
    }
}
