//! TLS on weir's ports, with rustls: `--tls-cert` and `--tls-key` serve every
//! port over TLS, `--client-ca` (the xDS port) and `--admin-client-ca` (the
//! admin port) require clients to present a certificate that CA signed
//! (mutual TLS). The files are read again when they change: new connections
//! get the new certificate, established ones (every Envoy's ADS stream) keep
//! theirs. A client speaking plaintext to a TLS port is refused with a line
//! in the log that says so.

mod files;
mod listener;
mod names;

use std::path::PathBuf;

use clap::Args;

pub use files::Reloading;
pub(crate) use files::certificates;
pub use listener::{TlsConn, TlsListener};
pub use names::AllowedNames;

/// The TLS flags of `weir serve`.
#[derive(Clone, Debug, Default, Args)]
pub struct TlsArgs {
    /// Serve every port (ADS, OTLP, the admin API, the dashboard, the module)
    /// over TLS with this certificate chain, PEM, leaf first. Read again when
    /// it changes.
    #[arg(long, env = "WEIR_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert`, PEM (PKCS #8, PKCS #1 or SEC1).
    #[arg(long, env = "WEIR_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// On the xDS port (ADS and OTLP/gRPC), accept only clients with a
    /// certificate this CA (PEM, one or more) signed: mutual TLS.
    #[arg(long, env = "WEIR_CLIENT_CA", requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,
    /// The same for the admin port (the admin API, OTLP/HTTP, the dashboard
    /// and the module download).
    #[arg(long, env = "WEIR_ADMIN_CLIENT_CA", requires = "tls_cert")]
    pub admin_client_ca: Option<PathBuf>,
    /// With replicas: the CA that signed the other replicas' certificates,
    /// which a follower checks when it forwards commands and metrics to the
    /// leader (default: the system's roots). With --admin-client-ca the
    /// follower presents its own --tls-cert.
    #[arg(long, env = "WEIR_PEER_CA", requires = "tls_cert")]
    pub peer_ca: Option<PathBuf>,
    /// With `--client-ca`: accept only client certificates naming one of
    /// these SANs (SPIFFE IDs or DNS names; a trailing `*` matches a
    /// prefix), comma-separated or repeated.
    #[arg(
        long,
        env = "WEIR_CLIENT_SANS",
        value_delimiter = ',',
        requires = "client_ca"
    )]
    pub client_san: Vec<String>,
    /// The same for the admin port, with `--admin-client-ca`.
    #[arg(
        long,
        env = "WEIR_ADMIN_CLIENT_SANS",
        value_delimiter = ',',
        requires = "admin_client_ca"
    )]
    pub admin_client_san: Vec<String>,
}

impl TlsArgs {
    /// How a replica reaches another's admin port: `None` in the clear.
    pub(crate) fn peer_client(&self) -> Option<crate::http_client::ClientTlsArgs> {
        self.tls_cert.as_ref()?;
        let mutual = self.admin_client_ca.is_some();
        Some(crate::http_client::ClientTlsArgs {
            ca_file: self.peer_ca.clone(),
            client_cert: self.tls_cert.clone().filter(|_| mutual),
            client_key: self.tls_key.clone().filter(|_| mutual),
        })
    }

    /// The two ports' TLS, if on: (xDS, admin). Fails when a file cannot be
    /// read or does not hold what it should.
    pub fn load(&self) -> anyhow::Result<Option<(Reloading, Reloading)>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let xds = Reloading::load(
            files::Paths {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.client_ca.clone(),
            },
            AllowedNames::new(&self.client_san),
        )?;
        let admin = Reloading::load(
            files::Paths {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.admin_client_ca.clone(),
            },
            AllowedNames::new(&self.admin_client_san),
        )?;
        Ok(Some((xds, admin)))
    }
}
