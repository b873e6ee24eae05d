//! The HTTP(S) server: an accept loop with bounds that hold before any request is
//! authenticated. A cap on open connections, a deadline for a request's headers once its
//! first byte arrives, a deadline for a TLS handshake, and an idle timeout for keep-alive
//! connections; each connection's requests carry the client address (`ConnectInfo`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::Service;

/// Bounds of the HTTP server.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Connections open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Once a request's first byte arrives, its headers must be complete within this (and
    /// a TLS handshake must finish within it).
    pub header_timeout: Duration,
    /// A connection with no request in flight and nothing arriving is closed after this.
    pub idle_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Raises this process' open-file soft limit to its hard limit; answers the new soft limit.
pub fn raise_fd_limit() -> Option<u64> {
    rlimit::increase_nofile_limit(u64::MAX).ok()
}

/// What a connection's watchdog reads: requests in flight, and when bytes last arrived and
/// the current unfinished request began, in milliseconds since the connection opened (0:
/// none).
#[derive(Default)]
struct Activity {
    in_flight: AtomicUsize,
    last_ms: AtomicU64,
    head_since_ms: AtomicU64,
}

struct Conn {
    opened: Instant,
    activity: Activity,
}

impl Conn {
    fn now_ms(&self) -> u64 {
        (self.opened.elapsed().as_millis() as u64).max(1)
    }
}

/// The connection's socket, noting when bytes arrive.
struct Watched<S> {
    inner: S,
    conn: Arc<Conn>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let a = &self.conn.activity;
            let now = self.conn.now_ms();
            a.last_ms.store(now, Ordering::Relaxed);
            if a.in_flight.load(Ordering::Relaxed) == 0 {
                let _ =
                    a.head_since_ms
                        .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Counts a request in flight until its response is produced.
struct InFlight(Arc<Conn>);

impl InFlight {
    fn start(conn: Arc<Conn>) -> Self {
        conn.activity.in_flight.fetch_add(1, Ordering::Relaxed);
        conn.activity.head_since_ms.store(0, Ordering::Relaxed);
        Self(conn)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0.activity;
        a.in_flight.fetch_sub(1, Ordering::Relaxed);
        a.last_ms.store(self.0.now_ms(), Ordering::Relaxed);
    }
}

/// Why the watchdog ends a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overdue {
    /// A request's headers did not arrive in time: dropped at once.
    Headers,
    /// Nothing in flight for the idle timeout: shut down gracefully.
    Idle,
}

/// Why the watchdog ends a connection, if it should now.
fn overdue(conn: &Conn, limits: &ServerLimits) -> Option<Overdue> {
    let a = &conn.activity;
    if a.in_flight.load(Ordering::Relaxed) > 0 {
        return None;
    }
    let now = conn.now_ms();
    let head = a.head_since_ms.load(Ordering::Relaxed);
    if head != 0 && now.saturating_sub(head) > limits.header_timeout.as_millis() as u64 {
        return Some(Overdue::Headers);
    }
    let last = a.last_ms.load(Ordering::Relaxed);
    if now.saturating_sub(last) > limits.idle_timeout.as_millis() as u64 {
        return Some(Overdue::Idle);
    }
    None
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then lets open requests finish
/// for up to `grace`. With `tls`, every connection is TLS.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut refused: u64 = 0;
    loop {
        let (tcp, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors or a connection reset before accept: wait a
                    // little instead of spinning, and keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(
                    max = limits.max_connections,
                    refused,
                    "connection cap reached; closing new connections (KITE_MAX_CONNECTIONS)"
                );
            }
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let acceptor = acceptor.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            match acceptor {
                None => connection(tcp, addr, app, limits, stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => connection(tls, addr, app, limits, stop).await,
                        Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    // Every connection was told to finish; wait for them, at most the grace period.
    let all = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("HTTP requests still open after the grace period");
    }
    Ok(())
}

async fn connection<S>(
    io: S,
    addr: SocketAddr,
    app: Router,
    limits: ServerLimits,
    stop: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(Conn {
        opened: Instant::now(),
        activity: Activity::default(),
    });
    conn.activity.last_ms.store(1, Ordering::Relaxed);
    let io = TokioIo::new(Watched {
        inner: io,
        conn: conn.clone(),
    });
    let svc_conn = conn.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let guard = InFlight::start(svc_conn.clone());
        req.extensions_mut().insert(ConnectInfo(addr));
        let mut app = app.clone();
        async move {
            let r = app.call(req.map(axum::body::Body::new)).await;
            drop(guard);
            Ok::<_, Infallible>(match r {
                Ok(r) => r,
                Err(never) => match never {},
            })
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(true);
    let served = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(served);
    let tick = (limits.header_timeout.min(limits.idle_timeout) / 4)
        .clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut closing: Option<Instant> = None;
    loop {
        tokio::select! {
            r = served.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%addr, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = tokio::time::sleep(tick) => {
                match (overdue(&conn, &limits), closing) {
                    // Nothing is in flight: dropping the connection loses no request.
                    (Some(Overdue::Headers), _) => {
                        tracing::debug!(%addr, "closing connection: request headers not complete in time");
                        return;
                    }
                    (Some(Overdue::Idle), None) => {
                        tracing::debug!(%addr, "closing idle connection");
                        served.as_mut().graceful_shutdown();
                        closing = Some(Instant::now());
                    }
                    (_, Some(since)) if since.elapsed() > limits.header_timeout
                        && conn.activity.in_flight.load(Ordering::Relaxed) == 0 => return,
                    _ => {}
                }
            }
            _ = stop.cancelled(), if closing.is_none() => {
                closing = Some(Instant::now());
                served.as_mut().graceful_shutdown();
            }
        }
    }
}
