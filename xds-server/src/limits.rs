//! Bounds on what clients can hold of weir: connections per port, how long
//! a new connection may take to send its opening bytes, streams per
//! connection, how long an HTTP/1 client may take to send a request's
//! headers (and how long an idle keep-alive connection stays open), and how
//! long a peer that stops answering HTTP/2 pings stays connected.
//!
//! A port with every connection slot taken stops accepting: new connections
//! wait in the kernel's backlog until one closes, and the log says so once
//! per episode.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

/// An HTTP/2 connection is pinged after this long without a frame…
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// …and closed if the ping is not answered within this.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Streams open at once on one HTTP/2 connection (an Envoy needs one ADS
/// stream and a few OTLP calls).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 128;
/// The largest header block a request may carry (HTTP/2).
pub const MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;
/// A new connection must send this many bytes (an HTTP/2 client's whole
/// preface) within the opening deadline: neither HTTP/2's handshake nor
/// the detection of the HTTP version has a deadline of its own, and
/// keep-alive pings start only after them.
const OPENING_BYTES: usize = 24;

/// The bounds operators can set.
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct LimitArgs {
    /// Connections open at once on the xDS port (every Envoy holds one);
    /// more wait until one closes.
    #[arg(long, env = "WEIR_MAX_XDS_CONNECTIONS", default_value_t = 100_000)]
    pub max_xds_connections: usize,

    /// Connections open at once on the admin port (the API, OTLP/HTTP, the
    /// dashboard, the module download); more wait until one closes.
    #[arg(long, env = "WEIR_MAX_ADMIN_CONNECTIONS", default_value_t = 4096)]
    pub max_admin_connections: usize,

    /// Milliseconds a new connection on either port has to send its opening
    /// bytes (after the TLS handshake, with TLS), and an HTTP/1 client on the
    /// admin port a request's headers; a keep-alive connection idle this
    /// long is closed.
    #[arg(long, env = "WEIR_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,
}

/// One port's connection slots.
#[derive(Debug)]
pub struct Slots {
    free: Arc<Semaphore>,
    max: usize,
    port: &'static str,
    /// How long a new connection has to send its opening bytes.
    opening: Duration,
    /// Logged that every slot is taken, and not since a slot came free.
    full: AtomicBool,
}

impl Slots {
    /// `max` slots (at least one) for the port named `port` in logs, whose
    /// connections have `opening` to send their opening bytes.
    pub fn new(max: usize, port: &'static str, opening: Duration) -> Arc<Self> {
        let max = max.max(1);
        Arc::new(Self {
            free: Arc::new(Semaphore::new(max)),
            max,
            port,
            opening,
            full: AtomicBool::new(false),
        })
    }

    /// `io` from `remote`, holding `slot` until it is dropped, with the
    /// opening deadline running from now.
    pub fn admit<Io>(&self, io: Io, slot: OwnedSemaphorePermit, remote: SocketAddr) -> Counted<Io> {
        Counted {
            io,
            remote,
            _slot: slot,
            opening: Some(Opening {
                deadline: Box::pin(tokio::time::sleep(self.opening)),
                read: 0,
            }),
        }
    }

    /// A slot for the next connection, once one is free.
    pub async fn take(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(slot) = Arc::clone(&self.free).try_acquire_owned() {
            self.full.store(false, Ordering::Relaxed);
            return Some(slot);
        }
        if !self.full.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                port = self.port,
                max = self.max,
                "every connection slot is taken: new connections wait until one closes"
            );
        }
        Arc::clone(&self.free).acquire_owned().await.ok()
    }
}

/// A connection holding its slot until it is dropped, and failing its reads
/// if its opening bytes do not arrive in time.
#[derive(Debug)]
pub struct Counted<Io> {
    io: Io,
    remote: SocketAddr,
    _slot: OwnedSemaphorePermit,
    /// Until [`OPENING_BYTES`] have arrived.
    opening: Option<Opening>,
}

impl<Io> Counted<Io> {
    /// The client's address.
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }
}

#[derive(Debug)]
struct Opening {
    deadline: Pin<Box<Sleep>>,
    read: usize,
}

/// Plaintext TCP connections within `slots`, as tonic's
/// `serve_with_incoming` takes them.
pub fn tcp_incoming(
    listener: TcpListener,
    slots: Arc<Slots>,
) -> impl futures::Stream<Item = io::Result<Counted<TcpStream>>> + Send + 'static {
    futures::stream::unfold(
        LimitedListener { listener, slots },
        |mut listener| async move {
            let (conn, _) = axum::serve::Listener::accept(&mut listener).await;
            Some((Ok(conn), listener))
        },
    )
}

/// A plaintext TCP listener within `slots`, for [`serve_http`].
pub struct LimitedListener {
    listener: TcpListener,
    slots: Arc<Slots>,
}

impl LimitedListener {
    pub fn new(listener: TcpListener, slots: Arc<Slots>) -> Self {
        Self { listener, slots }
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = Counted<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        loop {
            let Some(slot) = self.slots.take().await else {
                // The semaphore is never closed.
                return std::future::pending().await;
            };
            match self.listener.accept().await {
                Ok((tcp, remote)) => return (self.slots.admit(tcp, slot, remote), remote),
                Err(err) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(port = self.slots.port, %err, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// Serves `router` on every connection `listener` accepts, HTTP/1 or
/// HTTP/2, within this module's bounds.
pub async fn serve_http<L>(mut listener: L, router: Router, header_timeout: Duration)
where
    L: axum::serve::Listener,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .max_header_list_size(MAX_HEADER_LIST_BYTES);
    let builder = Arc::new(builder);
    loop {
        let (io, _) = listener.accept().await;
        let service = TowerToHyperService::new(router.clone());
        let builder = Arc::clone(&builder);
        tokio::spawn(async move {
            if let Err(err) = builder.serve_connection(TokioIo::new(io), service).await {
                tracing::debug!(%err, "an HTTP connection ended with an error");
            }
        });
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for Counted<Io> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        let Some(opening) = &mut this.opening else {
            return polled;
        };
        match polled {
            Poll::Ready(Ok(())) => {
                opening.read += buf.filled().len() - before;
                if opening.read >= OPENING_BYTES {
                    this.opening = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if opening.deadline.as_mut().poll(cx).is_ready() => {
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the connection's opening bytes did not arrive in time",
                )))
            }
            other => other,
        }
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for Counted<Io> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl<Io> tonic::transport::server::Connected for Counted<Io> {
    type ConnectInfo = SocketAddr;

    fn connect_info(&self) -> SocketAddr {
        self.remote
    }
}
