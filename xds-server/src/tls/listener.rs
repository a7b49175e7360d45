//! Accepting TLS connections: TCP connections are taken as they come and
//! each handshake runs on its own, within a deadline and a bound on how many
//! run at once, so that a slow or hostile client holds up no other. Finished
//! connections go to the server (tonic's incoming stream, axum's listener).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::Reloading;
use crate::limits::{Counted, Slots};

/// A client has this long to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes under way at once, per port; more connections wait in the
/// kernel's backlog.
const MAX_HANDSHAKES: usize = 256;

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// An established TLS connection, holding its port's connection slot.
pub type TlsConn = Counted<TlsStream<TcpStream>>;

/// The connections of one port, handshakes done.
pub struct TlsListener {
    connections: mpsc::Receiver<TlsConn>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `listener` with `tls` from now on, within `slots`; `port`
    /// names it in logs.
    pub fn spawn(
        listener: TcpListener,
        tls: Reloading,
        slots: Arc<Slots>,
        port: &'static str,
    ) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (sender, connections) = mpsc::channel(64);
        tokio::spawn(accept(listener, tls, slots, port, sender));
        Ok(Self { connections, local })
    }

    /// The connections as tonic's `serve_with_incoming` takes them.
    pub fn into_stream(
        self,
    ) -> impl futures::Stream<Item = Result<TlsConn, io::Error>> + Send + 'static {
        futures::stream::unfold(self.connections, |mut connections| async move {
            let conn = connections.recv().await?;
            Some((Ok(conn), connections))
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsConn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TlsConn, SocketAddr) {
        match self.connections.recv().await {
            Some(conn) => {
                let remote = conn.remote();
                (conn, remote)
            }
            // The acceptor is gone only with the runtime.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

async fn accept(
    listener: TcpListener,
    tls: Reloading,
    slots: Arc<Slots>,
    port: &'static str,
    sender: mpsc::Sender<TlsConn>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Some(slot) = slots.take().await else {
            return;
        };
        let Ok(permit) = Arc::clone(&handshakes).acquire_owned().await else {
            return;
        };
        let (tcp, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors, say: wait rather than spin.
                tracing::warn!(port, %err, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = TlsAcceptor::from(tls.current());
        let allowed = tls.allowed().clone();
        let sender = sender.clone();
        let slots = Arc::clone(&slots);
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(acceptor, tcp));
            let outcome = handshake.await;
            drop(permit);
            match outcome {
                Ok(Ok(stream)) => {
                    let leaf = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first());
                    match leaf.map_or(Ok(()), |leaf| allowed.check(leaf)) {
                        Ok(()) => {
                            let conn = slots.admit(stream, slot, remote);
                            let _ = sender.send(conn).await;
                        }
                        Err(names) => tracing::warn!(
                            port, %remote, ?names,
                            "client certificate names no allowed SAN; connection refused"
                        ),
                    }
                }
                Ok(Err(Refused::Plaintext)) => tracing::warn!(
                    port, %remote,
                    "refused a plaintext connection: this port speaks TLS (https://, or a TLS \
                     transport socket on Envoy's cluster)"
                ),
                Ok(Err(Refused::Handshake(err))) => {
                    tracing::warn!(port, %remote, %err, "TLS handshake failed; connection refused");
                }
                Err(_) => tracing::warn!(
                    port, %remote,
                    "TLS handshake not finished within {HANDSHAKE_TIMEOUT:?}; connection closed"
                ),
            }
        });
    }
}

enum Refused {
    Plaintext,
    Handshake(io::Error),
}

async fn handshake(acceptor: TlsAcceptor, tcp: TcpStream) -> Result<TlsStream<TcpStream>, Refused> {
    let mut first = [0u8; 1];
    match tcp.peek(&mut first).await {
        Ok(1) if first[0] != TLS_HANDSHAKE => return Err(Refused::Plaintext),
        Ok(_) => {}
        Err(err) => return Err(Refused::Handshake(err)),
    }
    acceptor.accept(tcp).await.map_err(Refused::Handshake)
}
