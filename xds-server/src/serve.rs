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
use crate::policy_source::{self, InvalidPolicy, Watcher};
use crate::resources::{self, Options, WasmSource};
use crate::snapshot::Snapshot;
use crate::xds::{AdsServer, Nodes};

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
    /// For `--wasm-delivery http`: the admin API's address as Envoys reach it
    /// (default: `--admin-address`).
    #[arg(long, env = "WEIR_WASM_SERVER")]
    pub wasm_server: Option<SocketAddr>,
    /// Write the bound addresses here as JSON once serving (for supervisors and tests).
    #[arg(long, env = "WEIR_READY_FILE")]
    pub ready_file: Option<PathBuf>,
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
    /// Feed values set through the admin API, kept across policy edits while they still fit.
    feed_override: Option<Feed>,
    options: Options,
    snapshots: watch::Sender<Arc<Snapshot>>,
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

    pub(crate) fn feed(&self) -> Feed {
        effective_feed(&self.policy, self.feed_override.as_ref())
    }

    /// Replaces the live feed; nothing changes if it does not fit the policy.
    pub(crate) fn set_feed(&mut self, feed: Feed) -> Result<String, Vec<String>> {
        let problems = feed.validate(&self.policy);
        if !problems.is_empty() {
            return Err(problems.iter().map(ToString::to_string).collect());
        }
        let snapshot = resources::build(&self.policy, &feed, &self.options)
            .map_err(|e| vec![e.to_string()])?;
        self.feed_override = Some(feed);
        Ok(self.publish(snapshot))
    }

    /// Applies a new policy text; an invalid one changes nothing.
    fn apply_policy_text(&mut self, text: &str) {
        let policy = match policy_source::parse(&self.policy_path, text) {
            Ok(policy) => policy,
            Err(invalid) => return self.reject(&invalid),
        };
        // The live feed survives an edit where it still fits the new policy.
        let feed_override = self
            .feed_override
            .clone()
            .filter(|f| f.validate(&policy).is_empty());
        let feed = effective_feed(&policy, feed_override.as_ref());
        match resources::build(&policy, &feed, &self.options) {
            Ok(snapshot) => {
                self.policy = policy;
                self.feed_override = feed_override;
                let version = self.publish(snapshot);
                tracing::info!(file = %self.policy_path.display(), version, "policy applied");
            }
            Err(err) => {
                tracing::error!(file = %self.policy_path.display(), error = %err, "policy rejected: the last good one keeps serving");
                self.last_error = Some(err.to_string());
            }
        }
    }

    fn reject(&mut self, invalid: &InvalidPolicy) {
        tracing::error!(
            file = %self.policy_path.display(),
            "policy rejected: the last good one keeps serving:\n{invalid}"
        );
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

fn effective_feed(policy: &Policy, feed_override: Option<&Feed>) -> Feed {
    feed_override
        .cloned()
        .unwrap_or_else(|| Feed::initial(policy))
}

/// Runs the server until the process is stopped.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
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
            let server = args.wasm_server.unwrap_or(admin_addr);
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
    };
    let snapshot = resources::build(&policy, &Feed::initial(&policy), &options)?;
    tracing::info!(version = %snapshot.version, file = %args.policy.display(), "policy loaded");
    let (snapshots, receiver) = watch::channel(Arc::new(snapshot));
    let control = Arc::new(Mutex::new(Control {
        policy_path: args.policy.clone(),
        policy,
        feed_override: None,
        options,
        snapshots,
        last_error: None,
    }));
    let nodes = Nodes::default();

    let ads = AdsServer::new(receiver, nodes.clone()).into_service();
    let xds = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ads)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(xds_listener)),
    );
    let admin_state = admin::AdminState::new(Arc::clone(&control), nodes, wasm_bytes);
    let admin =
        tokio::spawn(async move { axum::serve(admin_listener, admin::router(admin_state)).await });
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
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Some(text) = watcher.poll()
                    && let Ok(mut control) = control.lock() {
                        control.apply_policy_text(&text);
                    }
            }
            stopped = &mut xds => anyhow::bail!("the xDS server stopped: {stopped:?}"),
            stopped = &mut admin => anyhow::bail!("the admin server stopped: {stopped:?}"),
        }
    }
}
