//! The server's own accept loop: what `axum::serve` would do, plus the
//! hygiene an idle crowd needs. Each open connection costs a file
//! descriptor; without limits about 20,000 connections from one address
//! that trickle their request headers use every descriptor the process
//! may have, and `/api/health` then times out for everyone.
//!
//! - a header-read timeout (hyper's, HTTP/1): a request whose headers are
//!   not all in within it is closed. Its clock also runs while a kept-alive
//!   connection waits for its next request, so that wait is bounded by it
//!   too;
//! - an idle timeout: a connection with no byte read or written for that
//!   long is closed, whatever it is doing: a request body that stalls
//!   after its head, a client that stops reading its answer (event streams
//!   send a comment every 15 s, so a live one is never idle);
//! - a cap on connections open per client address (IPv6: per /64), so one
//!   address cannot hold more than its share; trusted proxies
//!   (`--trusted-proxy`) are exempt, they carry everyone;
//! - a cap on connections open in all, below the process's file-descriptor
//!   limit (`RLIMIT_NOFILE` minus a reserve for the history, Docker's
//!   socket, the VMs' descriptors), so the server always has descriptors
//!   for its own work.
//!
//! A connection beyond a cap is closed as soon as it is accepted.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use stacklab_api::ConnectionsStatus;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use super::client::TrustedProxies;

/// Default seconds a client has to send a request's headers.
pub const HEADER_READ_TIMEOUT_SECS: u64 = 10;
/// Default seconds a connection may pass without a byte either way.
pub const IDLE_TIMEOUT_SECS: u64 = 60;
/// Default connections one address may hold open. One address can be a
/// whole workshop behind one NAT: 100 learners, each with a page's
/// requests and an event stream or two (`stacklab bench room` with 50
/// learners from one address had 37 of its 100 runs refused at 64). Still
/// far below the descriptor limit, so one address cannot starve the rest.
pub const PER_ADDRESS: usize = 512;
/// File descriptors kept out of the global connection cap for the server's
/// own work, at least; a quarter of the limit when that is more.
pub const FD_RESERVE: usize = 256;

/// The limits connections are held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// The time to send a request's headers.
    pub header_read_timeout: Duration,
    /// The time a connection may pass without a byte either way.
    pub idle_timeout: Duration,
    /// Connections one address (IPv6: /64) may hold open.
    pub per_address: usize,
    /// Connections open in all.
    pub total: usize,
    /// The process's file-descriptor limit the total was sized from.
    pub fd_limit: u64,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits::new(
            Duration::from_secs(HEADER_READ_TIMEOUT_SECS),
            Duration::from_secs(IDLE_TIMEOUT_SECS),
            PER_ADDRESS,
            None,
        )
    }
}

impl ConnLimits {
    /// These limits; `total` by default the file-descriptor limit less
    /// the reserve (never above it: a larger `total` is lowered to it).
    pub fn new(
        header_read_timeout: Duration,
        idle_timeout: Duration,
        per_address: usize,
        total: Option<usize>,
    ) -> ConnLimits {
        let fd_limit = fd_limit();
        let fit = fd_budget(fd_limit);
        ConnLimits {
            header_read_timeout,
            idle_timeout,
            per_address,
            total: total.map_or(fit, |t| t.min(fit)),
            fd_limit,
        }
    }
}

/// The soft `RLIMIT_NOFILE` of this process.
pub fn fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes one `rlimit` we own; no other memory.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    if ok {
        limit.rlim_cur
    } else {
        1024
    }
}

/// Connections that fit under `fd_limit` with the reserve kept.
fn fd_budget(fd_limit: u64) -> usize {
    let limit = usize::try_from(fd_limit).unwrap_or(usize::MAX);
    let reserve = FD_RESERVE.max(limit / 4);
    limit.saturating_sub(reserve).max(1)
}

/// The connections open now, per address and in all, and what was refused.
#[derive(Debug)]
pub struct Connections {
    limits: ConnLimits,
    by_address: Mutex<HashMap<IpAddr, usize>>,
    open: AtomicUsize,
    refused: AtomicU64,
    timed_out: AtomicU64,
}

impl Default for Connections {
    fn default() -> Self {
        Connections::new(ConnLimits::default())
    }
}

/// Why a connection was not admitted.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    PerAddress,
    Total,
}

impl Connections {
    /// Counting under `limits`.
    pub fn new(limits: ConnLimits) -> Connections {
        Connections {
            limits,
            by_address: Mutex::default(),
            open: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
        }
    }

    /// The limits.
    pub fn limits(&self) -> ConnLimits {
        self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.by_address.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One more connection from `peer` (its /64 for IPv6), counted until
    /// the guard drops; `capped` is false for a trusted proxy.
    fn admit(self: &Arc<Self>, peer: IpAddr, capped: bool) -> Result<Admitted, Refusal> {
        let key = address_key(peer);
        let mut by_address = self.lock();
        if self.open.load(Ordering::Relaxed) >= self.limits.total {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::Total);
        }
        let mine = by_address.entry(key).or_default();
        if capped && *mine >= self.limits.per_address {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::PerAddress);
        }
        *mine += 1;
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(Admitted {
            connections: self.clone(),
            key,
        })
    }

    /// The numbers `/api/health` and `/metrics` show.
    pub fn status(&self) -> ConnectionsStatus {
        let by_address = self.lock();
        let u32_of = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        ConnectionsStatus {
            header_read_timeout_s: self.limits.header_read_timeout.as_secs_f64(),
            idle_timeout_s: self.limits.idle_timeout.as_secs_f64(),
            per_address_cap: u32_of(self.limits.per_address),
            total_cap: u32_of(self.limits.total),
            fd_limit: self.limits.fd_limit,
            open: u32_of(self.open.load(Ordering::Relaxed)),
            addresses: u32_of(by_address.len()),
            busiest_address: u32_of(by_address.values().copied().max().unwrap_or(0)),
            refused_total: self.refused.load(Ordering::Relaxed),
            idle_closed_total: self.timed_out.load(Ordering::Relaxed),
        }
    }
}

/// What the per-address cap counts: the address, or an IPv6 address's /64.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let keep = u128::from(v6) & (u128::MAX << 64);
            IpAddr::V6(keep.into())
        }
        v4 => v4,
    }
}

/// A connection counted as open until dropped.
#[derive(Debug)]
struct Admitted {
    connections: Arc<Connections>,
    key: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut by_address = self.connections.lock();
        if let Some(n) = by_address.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                by_address.remove(&self.key);
            }
        }
        self.connections.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Connections the kernel may hold completed but not yet accepted (the
/// kernel caps it at `net.core.somaxconn`, 4096 by default). A crowd
/// reconnecting as fast as it is closed fills a short queue, and then
/// everyone's connection attempt waits for a SYN retransmit (1 s or more).
pub const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `addr` with [`LISTEN_BACKLOG`].
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves `router` on `listener` under `connections`' limits until `stop`
/// completes; then lets every connection finish its request and close,
/// and returns when all have.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    connections: Arc<Connections>,
    trusted: TrustedProxies,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let (stopping, _) = tokio::sync::watch::channel(false);
    let tracker = tokio_util::task::TaskTracker::new();
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors (EMFILE/ENFILE) or a connection
                    // reset before it was taken: wait a moment, go on.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let admitted = match connections.admit(peer.ip(), !trusted.contains(peer.ip())) {
            Ok(a) => a,
            // Closed at once: the peer sees its connection end.
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let connections = connections.clone();
        let stopping = stopping.subscribe();
        tracker.spawn(async move {
            serve_one(stream, peer, router, &connections, stopping).await;
            drop(admitted);
        });
    }
    drop(listener);
    let _ = stopping.send(true);
    tracker.close();
    tracker.wait().await;
}

/// One connection, to its end, the idle timeout, or the server's stop.
async fn serve_one(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    connections: &Connections,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let limits = connections.limits;
    let started = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(Tracked {
        inner: stream,
        started,
        last: last.clone(),
    });
    let service = router.map_request(move |mut request: axum::http::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    });
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let conn = http1.serve_connection(io, TowerToHyperService::new(service));
    tokio::pin!(conn);
    let mut graceful = false;
    loop {
        // When the connection would count as idle if nothing moves.
        let quiet_since = started + Duration::from_millis(last.load(Ordering::Relaxed));
        let idle_at = tokio::time::Instant::from_std(quiet_since + limits.idle_timeout);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!("connection from {peer} ended: {e}");
                }
                return;
            }
            changed = stopping.changed(), if !graceful => {
                let _ = changed;
                graceful = true;
                conn.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(idle_at) => {
                let quiet = started.elapsed()
                    .saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
                if quiet >= limits.idle_timeout {
                    connections.timed_out.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("connection from {peer} idle for {quiet:?}: closed");
                    return;
                }
            }
        }
    }
}

/// A stream that notes when a byte last moved (ms since `started`).
struct Tracked {
    inner: TcpStream,
    started: Instant,
    last: Arc<AtomicU64>,
}

impl Tracked {
    fn moved(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.moved();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_address: usize, total: usize) -> ConnLimits {
        ConnLimits {
            header_read_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            per_address,
            total,
            fd_limit: 1024,
        }
    }

    #[test]
    fn connections_are_capped_per_address_and_in_all_and_freed_on_drop() {
        let c = Arc::new(Connections::new(limits(2, 3)));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = c.admit(a, true).unwrap();
        let _a2 = c.admit(a, true).unwrap();
        assert_eq!(c.admit(a, true).unwrap_err(), Refusal::PerAddress);
        let _b1 = c.admit(b, true).unwrap();
        assert_eq!(c.admit(b, true).unwrap_err(), Refusal::Total);
        let status = c.status();
        assert_eq!(
            (status.open, status.addresses, status.busiest_address),
            (3, 2, 2)
        );
        assert_eq!(status.refused_total, 2);
        drop(a1);
        assert!(c.admit(a, true).is_ok());
    }

    #[test]
    fn a_trusted_proxy_is_not_capped_per_address_and_ipv6_counts_by_64() {
        let c = Arc::new(Connections::new(limits(1, 10)));
        let proxy: IpAddr = "10.0.0.9".parse().unwrap();
        let _p: Vec<_> = (0..5).map(|_| c.admit(proxy, false).unwrap()).collect();
        let _v6 = c.admit("2001:db8:1:2::1".parse().unwrap(), true).unwrap();
        assert!(c
            .admit("2001:db8:1:2::ffff".parse().unwrap(), true)
            .is_err());
        assert!(c.admit("2001:db8:1:3::1".parse().unwrap(), true).is_ok());
    }

    #[test]
    fn the_total_stays_below_the_descriptor_limit() {
        assert_eq!(fd_budget(1024), 768);
        assert_eq!(fd_budget(20_000), 15_000);
        assert_eq!(fd_budget(512), 256);
        assert_eq!(fd_budget(100), 1);
        let l = ConnLimits::new(Duration::ZERO, Duration::ZERO, 1, Some(usize::MAX));
        assert!(l.total < usize::try_from(l.fd_limit).unwrap(), "{l:?}");
    }
}
