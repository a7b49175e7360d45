//! A port's TLS configuration from its files, read again when they change.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::AllowedNames;

/// How often the files are checked for a change.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The files one port's TLS comes from.
#[derive(Clone, Debug)]
pub(super) struct Paths {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
    pub(super) client_ca: Option<PathBuf>,
}

impl Paths {
    fn all(&self) -> impl Iterator<Item = &Path> {
        [self.cert.as_path(), self.key.as_path()]
            .into_iter()
            .chain(self.client_ca.as_deref())
    }

    /// When each file last changed, and its length: what a rotation changes.
    fn stamp(&self) -> Vec<Option<(SystemTime, u64)>> {
        self.all()
            .map(|path| {
                let meta = std::fs::metadata(path).ok()?;
                Some((meta.modified().ok()?, meta.len()))
            })
            .collect()
    }
}

/// The configuration new connections of a port get, replaced when its
/// files change and the new ones are good.
#[derive(Clone, Debug)]
pub struct Reloading {
    paths: Paths,
    allowed: AllowedNames,
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl Reloading {
    /// Reads the files once; an error names the file and what is wrong.
    pub(super) fn load(paths: Paths, allowed: AllowedNames) -> anyhow::Result<Self> {
        let config = build(&paths)?;
        Ok(Self {
            paths,
            allowed,
            current: Arc::new(RwLock::new(Arc::new(config))),
        })
    }

    /// The client certificates' names this port accepts.
    pub fn allowed(&self) -> &AllowedNames {
        &self.allowed
    }

    /// What a connection accepted now is served with.
    pub fn current(&self) -> Arc<ServerConfig> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        Arc::clone(&current)
    }

    /// Whether clients must present a certificate.
    pub fn mutual(&self) -> bool {
        self.paths.client_ca.is_some()
    }

    /// Checks the files every second for as long as it runs, and takes
    /// changed ones that are good; bad ones are logged and the last good
    /// configuration stays.
    pub async fn watch(self, port: &'static str) {
        let mut seen = self.paths.stamp();
        let mut tick = tokio::time::interval(CHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let stamp = self.paths.stamp();
            if stamp == seen {
                continue;
            }
            seen = stamp;
            match build(&self.paths) {
                Ok(config) => {
                    *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
                    tracing::info!(port, cert = %self.paths.cert.display(), "TLS certificate reloaded; new connections use it");
                }
                Err(err) => tracing::warn!(
                    port,
                    "TLS files changed but cannot be used, the last good ones stay: {err:#}"
                ),
            }
        }
    }
}

fn build(paths: &Paths) -> anyhow::Result<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&paths.cert)?;
    let key = PrivateKeyDer::from_pem_file(&paths.key)
        .with_context(|| format!("{}: no private key in PEM", paths.key.display()))?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &paths.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(ca)? {
                roots
                    .add(cert)
                    .with_context(|| format!("{}: not a CA certificate", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .with_context(|| format!("{}: cannot verify clients with it", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).with_context(|| {
        format!(
            "{} and {}: the key does not go with the certificate",
            paths.cert.display(),
            paths.key.display()
        )
    })?;
    // gRPC needs HTTP/2; the admin port also answers HTTP/1.1 (curl, browsers).
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

pub(crate) fn certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not PEM certificates", path.display()))?;
    if certs.is_empty() {
        bail!("{}: no certificate in it", path.display());
    }
    Ok(certs)
}
