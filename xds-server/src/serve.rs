//! `weir serve`: the control server. It turns the policy file (and its live
//! feed) into snapshots, serves them to Envoys over ADS, and keeps serving the
//! last good one whatever happens to the file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use clap::{Args, ValueEnum};

use crate::admin;
use crate::limits::{self, LimitedListener, Slots};
use crate::metrics_store::MetricsStore;
use crate::otlp::Ingest;
use crate::policy_source::{self, Watcher};
use crate::replication::{Forwarder, ReplicaInfo, Replication};
use crate::resources::{HostPort, Options, WasmSource};
use crate::serving::{Control, now_ms};
use crate::store::{Opened, Store, Writes};
use crate::telemetry::Telemetry;
use crate::tls::TlsListener;
use crate::xds::{AdsServer, Nodes};

/// How long metrics samples are kept: several analysis windows.
const METRICS_RETENTION_MS: u64 = 60_000;

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
    /// How Envoys get the module: `local` (a path on their host), `http`
    /// (fetched from this server's admin API, checked by its sha256) or,
    /// with TLS, `https` (the same over TLS, through the `weir_wasm` cluster
    /// of the Envoys' bootstrap: envoy/bootstrap-tls.yaml).
    #[arg(long, env = "WEIR_WASM_DELIVERY", value_enum, default_value_t = WasmDelivery::Local)]
    pub wasm_delivery: WasmDelivery,
    /// For `--wasm-delivery http` or `https`: the admin API as Envoys reach
    /// it, `host:port` with an IP address or a DNS name (default:
    /// `--admin-address`); with `https`, the name in weir's certificate.
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
    /// `weir` resumes every rollout from it (unless `--store` names etcd).
    #[arg(long, env = "WEIR_STATE", default_value = "weir-state.redb")]
    pub state: PathBuf,
    /// etcd instead of the `--state` file, for replicas.
    #[command(flatten)]
    pub store: crate::store::StoreArgs,
    /// Replicas on etcd: the leader's lease, this replica's name and address.
    #[command(flatten)]
    pub replication: crate::replication::ReplicationArgs,
    /// How often the controller evaluates the metrics, in milliseconds.
    #[arg(long, env = "WEIR_CONTROL_INTERVAL_MS", default_value_t = 250)]
    pub control_interval_ms: u64,
    /// The admin API's bearer token.
    #[command(flatten)]
    pub admin_auth: admin::AuthArgs,
    /// The names the admin API answers to, and whose pages may command it.
    #[command(flatten)]
    pub origin: admin::OriginArgs,
    /// The xDS port's bearer token (ADS and OTLP/gRPC).
    #[command(flatten)]
    pub xds_auth: crate::xds::XdsAuthArgs,
    /// Where the dashboard's policy simulator is (`weir_simulator.js` and its
    /// `.wasm`); default: `simulator/` beside the weir executable.
    #[arg(long, env = "WEIR_SIMULATOR_DIR")]
    pub simulator_dir: Option<PathBuf>,
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,

    #[command(flatten)]
    pub limits: crate::limits::LimitArgs,
}

/// How Envoys get the filter module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WasmDelivery {
    /// A file path on the Envoy's host.
    Local,
    /// Over HTTP from `weir`, with its sha256.
    Http,
    /// Over HTTPS from `weir` (with `--tls-cert`), with its sha256, through
    /// the `weir_wasm` cluster of the Envoys' bootstrap, which carries the
    /// TLS settings (the CA, the client certificate, the name to check).
    Https,
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
        match control.save_timeline(&points, horizon) {
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
    crate::health::install_panic_hook();
    let auth = admin::Auth::new(&args.admin_auth, args.admin_address)?;
    let xds_auth = crate::xds::XdsAuth::new(&args.xds_auth, args.xds_address)?;
    let origin = admin::OriginGuard::new(&args.origin, auth.required());
    let (policy, text) =
        policy_source::read(&args.policy).map_err(|invalid| anyhow::anyhow!("{invalid}"))?;
    let wasm_bytes = std::fs::read(&args.wasm).map_err(|err| {
        anyhow::anyhow!(
            "cannot read the filter module {}: {err}",
            args.wasm.display()
        )
    })?;
    let tls = args.tls.load()?;
    match (&tls, args.wasm_delivery) {
        (Some(_), WasmDelivery::Http) => anyhow::bail!(
            "--wasm-delivery http cannot be used with --tls-cert: Envoy would fetch the module \
             over plaintext from a TLS port; use --wasm-delivery https (with the weir_wasm \
             cluster of envoy/bootstrap-tls.yaml) or local"
        ),
        (None, WasmDelivery::Https) => anyhow::bail!(
            "--wasm-delivery https needs --tls-cert and --tls-key: the admin port serves the module"
        ),
        _ => {}
    }
    let xds_listener = tokio::net::TcpListener::bind(args.xds_address).await?;
    let admin_listener = tokio::net::TcpListener::bind(args.admin_address).await?;
    let (xds_addr, admin_addr) = (xds_listener.local_addr()?, admin_listener.local_addr()?);

    let wasm = match args.wasm_delivery {
        WasmDelivery::Local => WasmSource::Local(std::fs::canonicalize(&args.wasm)?),
        WasmDelivery::Http | WasmDelivery::Https => {
            let server = args
                .wasm_server
                .clone()
                .unwrap_or_else(|| admin_addr.into());
            let https = args.wasm_delivery == WasmDelivery::Https;
            WasmSource::Remote {
                uri: format!(
                    "{}://{server}{}",
                    if https { "https" } else { "http" },
                    admin::WASM_PATH
                ),
                sha256: admin::sha256_hex(&wasm_bytes),
                // Over HTTPS the bootstrap's cluster, which knows the TLS.
                server: (!https).then_some(server),
            }
        }
    };
    let options = Options {
        listener: args.listener_address,
        wasm,
        version_header: args.version_header,
    };
    let (state, etcd): (Box<dyn Store>, _) = match args.store.open(&args.state)? {
        Opened::Embedded(redb) => (Box::new(redb), None),
        Opened::Etcd(etcd) => {
            // Nothing is written until this replica leads.
            etcd.set_writes(Writes::Refused);
            (Box::new(Arc::clone(&etcd)), Some(etcd))
        }
    };
    let replication = match &etcd {
        None => Replication::single(),
        Some(_) => {
            let admin = match args.replication.advertise_admin.clone() {
                Some(admin) => admin,
                // Other replicas forward commands and metrics here.
                None if admin_addr.ip().is_unspecified() => anyhow::bail!(
                    "with --store etcd://…, the other replicas reach this one's admin API at \
                     its address, and {admin_addr} is none: set --advertise-admin HOST:PORT \
                     (WEIR_ADVERTISE_ADMIN), e.g. the pod's IP and port {}",
                    admin_addr.port()
                ),
                None => admin_addr.into(),
            };
            let me = ReplicaInfo {
                id: args
                    .replication
                    .replica_id
                    .clone()
                    .unwrap_or_else(|| default_replica_id(admin_addr)),
                admin: admin.to_string(),
                xds: xds_addr.to_string(),
                ..ReplicaInfo::default()
            };
            Replication::replica(
                me,
                args.replication.lease_ttl_secs,
                args.admin_auth.forwarding_token()?,
                args.tls.peer_client(),
            )?
        }
    };
    let mut saved = state.load()?;
    if !saved.rollouts.is_empty() {
        tracing::info!(rollouts = saved.rollouts.len(), store = %state.describe(), "resuming rollouts");
    }
    let controller = crate::controller::Controller::new(&policy, Vec::new(), now_ms());
    let metrics = Arc::new(Mutex::new(MetricsStore::new(METRICS_RETENTION_MS)));
    let telemetry = Telemetry::default();
    let (control, receiver) = Control::new(
        args.policy.clone(),
        policy,
        &text,
        etcd.is_none(),
        options,
        controller,
        state,
        Arc::clone(&metrics),
        telemetry.clone(),
    )?;
    let mut control = control;
    // What was saved is resumed as a replica takes over a leader's state.
    let timeline = std::mem::take(&mut saved.timeline);
    control.adopt(saved, etcd.is_none());
    let control = Arc::new(Mutex::new(control));
    let ingest = Ingest::new(Arc::clone(&metrics), now_ms);
    let nodes = Nodes::default();
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let replica = etcd.map(|etcd| {
        let forwarder = Forwarder::new(replication.clone());
        ingest.forward_to(forwarder.clone());
        tokio::spawn(forwarder.run());
        tokio::spawn(crate::replication::run(
            replication.clone(),
            etcd,
            Arc::clone(&control),
            nodes.clone(),
            args.store.timeout(),
            stopping,
        ))
    });

    let ads = AdsServer::new(receiver, nodes.clone()).into_service();
    // OTLP/gRPC shares the ADS port: Envoy's stats sink reaches weir through
    // the same cluster as its configuration.
    let otlp_auth = xds_auth.for_otlp(args.admin_auth.ingest()?);
    let limits = &args.limits;
    let header_timeout = std::time::Duration::from_millis(limits.header_timeout_ms.max(1));
    let xds_slots = Slots::new(limits.max_xds_connections, "xds", header_timeout);
    let admin_slots = Slots::new(limits.max_admin_connections, "admin", header_timeout);
    let xds_router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(limits::KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(limits::KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(Some(limits::MAX_STREAMS_PER_CONNECTION))
        .http2_max_header_list_size(Some(limits::MAX_HEADER_LIST_BYTES))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            ads, xds_auth,
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            ingest.grpc_service(),
            otlp_auth,
        ));
    let xds = match &tls {
        None => tokio::spawn(
            xds_router.serve_with_incoming(limits::tcp_incoming(xds_listener, xds_slots)),
        ),
        Some((xds_tls, _)) => {
            tokio::spawn(xds_tls.clone().watch("xds"));
            let incoming = TlsListener::spawn(xds_listener, xds_tls.clone(), xds_slots, "xds")?;
            tokio::spawn(xds_router.serve_with_incoming(incoming.into_stream()))
        }
    };
    let dashboard = crate::dashboard::Dashboard::new(
        Arc::clone(&control),
        Arc::clone(&metrics),
        args.simulator_dir.clone(),
    );
    let saved_until_ms = timeline.last().map_or(0, |p| p.at_ms);
    dashboard.timeline().restore(now_ms(), timeline);
    let mut timeline_saver = TimelineSaver {
        saved_until_ms,
        unsaved: 0,
    };
    let control_interval = std::time::Duration::from_millis(args.control_interval_ms.max(10));
    let heartbeat = Arc::new(crate::health::Heartbeat::new(control_interval));
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
        replication,
        Arc::clone(&heartbeat),
    );
    let admin_router = admin::router(admin_state, origin);
    let admin = match &tls {
        None => {
            let listener = LimitedListener::new(admin_listener, admin_slots);
            tokio::spawn(limits::serve_http(listener, admin_router, header_timeout))
        }
        Some((_, admin_tls)) => {
            tokio::spawn(admin_tls.clone().watch("admin"));
            let incoming =
                TlsListener::spawn(admin_listener, admin_tls.clone(), admin_slots, "admin")?;
            tokio::spawn(limits::serve_http(incoming, admin_router, header_timeout))
        }
    };
    match &tls {
        None => tracing::info!(%xds_addr, %admin_addr, "serving"),
        Some((xds_tls, admin_tls)) => tracing::info!(
            %xds_addr, %admin_addr,
            xds_clients = if xds_tls.mutual() { "certificate required" } else { "any" },
            admin_clients = if admin_tls.mutual() { "certificate required" } else { "any" },
            "serving over TLS"
        ),
    }
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
    let mut control_tick = tokio::time::interval(control_interval);
    control_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Some(read) = watcher.poll()
                    && let Ok(mut control) = control.lock() {
                        match read {
                            Ok(text) => control.apply_policy_text(&text),
                            Err(invalid) => control.reject(&invalid),
                        }
                    }
            }
            _ = control_tick.tick() => {
                if let Ok(mut control) = control.lock() {
                    let now = now_ms();
                    control.control(now);
                    // Only the deciding process keeps the timeline.
                    if dashboard.record(&control, now) && control.deciding() {
                        timeline_saver.point_added(&control, &dashboard, now);
                    }
                    heartbeat.beat();
                }
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            stopped = &mut xds => anyhow::bail!("the xDS server stopped: {stopped:?}"),
            stopped = &mut admin => anyhow::bail!("the admin server stopped: {stopped:?}"),
        }
    }
    tracing::info!("stopping");
    // A leader resigns, so that another replica leads at once rather than
    // when the lease expires.
    let _ = stop.send(true);
    if let Some(replica) = replica {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), replica).await;
    }
    Ok(())
}

/// The host name and the admin port: unique among replicas on distinct hosts
/// and among those sharing one.
fn default_replica_id(admin: SocketAddr) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "weir".to_owned());
    format!("{host}-{}", admin.port())
}
