//! A TLS front for a backend whose handshakes take as long as the test says:
//! an upstream that is far away, as Envoy measures it. Envoy counts a TLS
//! upstream's connection as made once its handshake is done, so the delay
//! shows in its `upstream_cx_connect_ms` like a longer round trip.
//!
//! Loopback has no latency to add, and shaping traffic needs privileges
//! these machines do not give; a slower handshake needs none.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};

use crate::certs::Pem;

/// Connections relayed at most at once; more wait for the kernel's backlog.
const MAX_CONNECTIONS: usize = 256;

/// A TLS listener on 127.0.0.1 relaying to a plain backend, stopped when dropped.
pub struct SlowTls {
    addr: SocketAddr,
    delay_ms: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl SlowTls {
    /// Listens on a port the kernel picks, serving `identity`, relaying to `backend`.
    pub async fn start(backend: SocketAddr, identity: &Pem) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain =
            CertificateDer::pem_file_iter(&identity.cert)?.collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(&identity.key)?;
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let delay_ms = Arc::new(AtomicU64::new(0));
        let delay = Arc::clone(&delay_ms);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let task = tokio::spawn(async move {
            loop {
                let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                    return;
                };
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, wait) = (
                    acceptor.clone(),
                    Duration::from_millis(delay.load(Ordering::Relaxed)),
                );
                tokio::spawn(async move {
                    let _permit = permit;
                    // The client's hello waits: its handshake ends `wait` later.
                    tokio::time::sleep(wait).await;
                    let Ok(mut tls) = acceptor.accept(client).await else {
                        return;
                    };
                    let Ok(mut upstream) = TcpStream::connect(backend).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                });
            }
        });
        Ok(Self {
            addr,
            delay_ms,
            task,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How long each new connection's handshake is held from now on.
    pub fn set_handshake_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.delay_ms.store(ms, Ordering::Relaxed);
    }
}

impl Drop for SlowTls {
    fn drop(&mut self) {
        self.task.abort();
    }
}
