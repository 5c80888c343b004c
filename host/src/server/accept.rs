//! The HTTP listener: hyper-util's connection builder, a watch on each
//! connection that closes it when a request's headers are slow to come or
//! it sits idle past the keep-alive limit, a connection cap below the
//! process's file limit, and accept errors backed off.
//!
//! At the cap the oldest idle connection (no request in flight) is closed to
//! make room, so a crowd of idle or slow-to-speak sockets can never lock out
//! a real request such as a health probe; when every connection is busy the
//! accept waits for one to finish. A connection whose client stops reading
//! its answers is closed once its writes have stalled for the write-stall
//! limit, so busy connections cannot pile up for ever either. One closed
//! after an answer given before its request's body was read lingers
//! ([`Lingering`]), so the client gets that answer rather than a reset.

use axum::extract::ConnectInfo;
use hyper::body::{Body as HttpBody, Bytes, Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::linger::{Lingerers, Lingering};
use super::write_stall::{WritePace, WriteStallLimited};

/// Time a client has to send a request's headers, counted from when the
/// connection opens or from the request's first byte.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection may wait for its client, when nothing of it is in
/// the router's hands.
#[derive(Clone, Copy, Debug)]
pub struct ReadLimits {
    /// For a request's headers, from the connection's opening or the
    /// request's first byte (a silent or slow-talking client).
    pub header: Duration,
    /// Between requests on a kept-alive connection. hyper's own header
    /// timeout runs from the end of the last answer, so it would close an
    /// idle connection after `header` too: a load balancer keeping its
    /// connections 60 s would send requests down closed ones (502s).
    pub idle: Duration,
}

/// How long an evicted idle connection may take to close.
const EVICTION_GRACE: Duration = Duration::from_millis(200);

/// File descriptors kept back from the connection cap for pools, the
/// component cache, logs and outbound requests.
const RESERVED_FDS: u64 = 256;

/// The connection cap: `NEO_OPS_MAX_CONNECTIONS` when set, else the file
/// limit (raised to its hard limit first) less what the rest of the process
/// needs.
pub fn connection_cap(configured: Option<usize>) -> usize {
    let ceiling = cap_under(raise_file_limit());
    configured.map_or(ceiling, |c| c.min(ceiling)).max(1)
}

/// Connections under a file limit: [`RESERVED_FDS`] kept back, or a quarter
/// of a small limit, so the cap always stays below the limit itself.
fn cap_under(file_limit: u64) -> usize {
    file_limit.saturating_sub(RESERVED_FDS.min(file_limit / 4)) as usize
}

/// Raises the soft `RLIMIT_NOFILE` to the hard one; returns the soft limit in force.
fn raise_file_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if let Some(cur) = raised_soft_limit(lim.rlim_cur, lim.rlim_max) {
            let raised = libc::rlimit {
                rlim_cur: cur,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = raised.rlim_cur;
            }
        }
    }
    lim.rlim_cur
}

/// The soft file limit to ask for: the hard one, up to 2^20; never lower
/// than the soft limit already is (one set high by the operator stays).
fn raised_soft_limit(soft: u64, hard: u64) -> Option<u64> {
    let wanted = hard.min(1 << 20);
    (wanted > soft).then_some(wanted)
}

/// One open connection, as the cap and its read watch see it.
struct Conn {
    in_flight: AtomicUsize,
    /// Written to since hyper last flushed: an answer still going out.
    unflushed: AtomicBool,
    close: CancellationToken,
    /// The origin of the times below.
    opened: Instant,
    /// Milliseconds after `opened`, plus one (0: none), when the first byte
    /// of a request not yet in the router's hands arrived.
    head_from: AtomicU64,
    /// Milliseconds after `opened`, plus one (0: none yet), when its last
    /// request left the router's hands.
    idle_from: AtomicU64,
    /// The latest request's body is not read to its end: a close after
    /// its answer lingers ([`Lingering`]).
    body_unread: Arc<AtomicBool>,
}

impl Conn {
    fn new(close: CancellationToken) -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            unflushed: AtomicBool::new(false),
            close,
            opened: Instant::now(),
            head_from: AtomicU64::new(0),
            idle_from: AtomicU64::new(0),
            body_unread: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Now, as `head_from` and `idle_from` count it.
    fn now_mark(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64 + 1
    }

    /// When the connection has waited too long for its client: `None`
    /// while a request or its answer is in hand (the request and write
    /// limits hold then). The first request's headers are timed from the
    /// opening (a client silent for 9 s does not get 10 more from its
    /// first byte); a later one's from its first byte.
    fn read_deadline(&self, limits: &ReadLimits) -> Option<Instant> {
        if !self.idle() {
            return None;
        }
        let at = |mark: u64| self.opened + Duration::from_millis(mark - 1);
        Some(
            match (
                self.head_from.load(Ordering::Acquire),
                self.idle_from.load(Ordering::Acquire),
            ) {
                (_, 0) => self.opened + limits.header,
                (0, idle) => at(idle) + limits.idle,
                (head, _) => at(head) + limits.header,
            },
        )
    }

    /// Marks the connection idle from now, before it counts as idle (the
    /// read watch never finds it idle with an older mark).
    fn mark_idle(&self) {
        self.idle_from.store(self.now_mark(), Ordering::Release);
    }

    /// No request in flight and no answer still being written: hyper lets
    /// go of a response body once it has queued the last frame, and a
    /// download still going out is not idle.
    fn idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && !self.unflushed.load(Ordering::Acquire)
    }
}

/// Open connections, oldest first.
#[derive(Default)]
struct Registry {
    conns: Mutex<VecDeque<Weak<Conn>>>,
}

impl Registry {
    fn add(&self, conn: &Arc<Conn>) {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.retain(|c| c.strong_count() > 0);
        conns.push_back(Arc::downgrade(conn));
    }

    /// Asks the oldest idle connection to close; false when all are busy.
    fn evict_idle(&self) -> bool {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.retain(|c| c.strong_count() > 0);
        let victim = conns.iter().position(|c| {
            c.upgrade()
                .is_some_and(|c| c.idle() && !c.close.is_cancelled())
        });
        match victim
            .and_then(|i| conns.remove(i))
            .and_then(|c| c.upgrade())
        {
            Some(conn) => {
                conn.close.cancel();
                true
            }
            None => false,
        }
    }
}

/// How often a connection waiting at the cap looks for one gone idle.
const LOOK_AGAIN: Duration = Duration::from_millis(50);

/// Serves `app` on `listener` until `shutdown`, then lets open connections
/// finish their requests (the caller bounds how long).
pub async fn serve(
    listener: TcpListener,
    live: Arc<super::Live>,
    max_connections: usize,
    read_limits: ReadLimits,
    write_pace: WritePace,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    let lingerers = Lingerers::under(max_connections);
    let registry = Arc::new(Registry::default());
    let tracker = TaskTracker::new();
    let mut builder = Builder::new(TokioExecutor::new());
    // HTTP/1 only: no protocol sniffing. hyper's header timeout is off:
    // each connection's read watch ([`ReadLimits`]) tells a slow request
    // from an idle keep-alive connection, which hyper's cannot.
    builder = builder.http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        // Half-closes stay off: with them on, hyper stops reading during a
        // request, and a client that left (its request still waiting for a
        // plugin slot, which it then gives up) looks like one that only
        // shut its sending side. A client that half-closes gets no answer.
        .keep_alive(true);
    let builder = Arc::new(builder);
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(5);
                a
            }
            Err(e) => {
                // Out of descriptors or memory: wait, then try again (a
                // connection or two will have closed), never spin.
                tracing::warn!(error = %e, ?backoff, "accept failed; backing off");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            // At the cap: make room by closing the oldest idle connection; if
            // every one is busy, look again now and then, since a busy one
            // left open by keep-alive goes idle without closing.
            Err(_) => {
                let mut evicted_at: Option<tokio::time::Instant> = None;
                let waited = loop {
                    // One at a time: a closed connection frees its slot. One
                    // that has not within its grace (a request reached it
                    // as it was asked to close) leaves room to ask the next.
                    if evicted_at.is_none_or(|at| at.elapsed() > EVICTION_GRACE) {
                        evicted_at = registry.evict_idle().then(tokio::time::Instant::now);
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => break None,
                        p = slots.clone().acquire_owned() => break p.ok(),
                        _ = tokio::time::sleep(LOOK_AGAIN) => {}
                    }
                };
                match waited {
                    Some(p) => p,
                    None => break,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(Conn::new(shutdown.child_token()));
        registry.add(&conn);
        // Each request goes to the router of the plugin set served when it
        // arrives: a reload takes effect for the next request, even on a
        // kept-alive connection.
        let service = {
            let (conn, live) = (conn.clone(), live.clone());
            tower::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                // Busy from the request's start until its response body is
                // written out (or the request is dropped): a handler that no
                // longer holds the request, or a long body still being sent,
                // is never taken for idle.
                let busy = Busy::enter(&conn);
                let head = req.method() == hyper::Method::HEAD;
                let unread = &conn.body_unread;
                unread.store(!HttpBody::is_end_stream(req.body()), Ordering::Release);
                let mut req = req.map(|body| {
                    axum::body::Body::new(ReadToEnd {
                        body,
                        unread: unread.clone(),
                    })
                });
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                let response = live.router().oneshot(req);
                async move {
                    let mut response = response.await?;
                    drop_false_length(&mut response, head);
                    Ok::<_, std::convert::Infallible>(
                        response.map(|body| BusyBody { body, _busy: busy }),
                    )
                }
            })
        };
        let (builder, lingerers) = (builder.clone(), lingerers.clone());
        tracker.spawn(async move {
            let socket = Lingering::new(
                stream,
                permit,
                lingerers.clone(),
                conn.close.clone(),
                conn.body_unread.clone(),
            );
            let io = Unflushed {
                io: WriteStallLimited::new(socket, write_pace),
                conn: conn.clone(),
            };
            let io = TokioIo::new(io);
            let served =
                builder.serve_connection_with_upgrades(io, TowerToHyperService::new(service));
            tokio::pin!(served);
            loop {
                tokio::select! {
                    _ = served.as_mut() => return,
                    _ = conn.close.cancelled() => break,
                    // Nothing in hand: closed at once, so a request whose
                    // headers complete now is not started and then cut off.
                    // (One that came in as the limit passed is served.)
                    _ = waited_too_long(&conn, read_limits) => if conn.idle() {
                        return;
                    },
                }
            }
            served.as_mut().graceful_shutdown();
            if conn.idle() {
                // Evicted while idle: a half-sent request does not get to
                // hold the slot until its header timeout.
                let _ = tokio::time::timeout(EVICTION_GRACE, served).await;
            } else {
                let _ = served.await;
            }
        });
    }
    // Refused from now on, rather than taken and left unanswered while the
    // open connections finish: a load balancer moves on at once.
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

/// Ends once `conn` has waited past its [`ReadLimits`] for its client. It
/// looks again at least every `min(header, idle)`, not only at the deadline
/// it last saw: a request begun since (a later deadline's headers) or an
/// answer written since is read from the connection's marks each time, so
/// each limit holds to within nothing of its own length.
async fn waited_too_long(conn: &Conn, limits: ReadLimits) {
    let step = limits.header.min(limits.idle);
    loop {
        let now = Instant::now();
        match conn.read_deadline(&limits) {
            Some(at) if at <= now => return,
            Some(at) => tokio::time::sleep_until(at.min(now + step).into()).await,
            None => tokio::time::sleep(step).await,
        }
    }
}

/// Takes off a `Content-Length` the answer must not carry (RFC 9110 §8.6).
/// axum puts one on every body of known size, and on a `HEAD` answer hyper
/// sends it as it is: `0` on a 304 or 204, where the field is not allowed,
/// and `0` on a `HEAD` whose handler skips building the body (the support
/// bundle), where a `GET` would send a whole download. No length at all is
/// what the RFC allows there.
fn drop_false_length<B>(response: &mut hyper::Response<B>, head: bool) {
    let status = response.status();
    let barred = status.is_informational()
        || status == hyper::StatusCode::NO_CONTENT
        || status == hyper::StatusCode::NOT_MODIFIED;
    let headers = response.headers_mut();
    let zero = headers
        .get(hyper::header::CONTENT_LENGTH)
        .is_some_and(|v| v == "0");
    if barred || (head && zero) {
        headers.remove(hyper::header::CONTENT_LENGTH);
    }
}

/// Marks its connection busy while alive.
struct Busy(Arc<Conn>);

impl Busy {
    fn enter(conn: &Arc<Conn>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        conn.head_from.store(0, Ordering::Release);
        Self(conn.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        // Marked before the count falls, so the read watch never finds the
        // connection idle with the last request's mark missing (the answer's
        // last flush marks it again: idle time runs once it is written).
        let conn = &self.0;
        conn.mark_idle();
        conn.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its connection busy until hyper has taken its
/// last frame (or dropped it).
struct BusyBody {
    body: axum::body::Body,
    _busy: Busy,
}

impl HttpBody for BusyBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request's body, marking its connection's `body_unread` false once read
/// to its end. (hyper reading the rest itself after an early answer leaves
/// it set, but then keeps the connection, and its next request sets it.)
struct ReadToEnd {
    body: hyper::body::Incoming,
    unread: Arc<AtomicBool>,
}

impl HttpBody for ReadToEnd {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.unread.store(false, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A connection's socket, marking it as writing from each write until
/// hyper's next flush has gone through (hyper flushes once its buffer is
/// written out).
struct Unflushed<S> {
    io: S,
    conn: Arc<Conn>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Unflushed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.io).poll_read(cx, buf);
        // The first byte of a request: its headers' time starts.
        let conn = &self.conn;
        if buf.filled().len() > before
            && conn.head_from.load(Ordering::Relaxed) == 0
            && conn.in_flight.load(Ordering::Acquire) == 0
        {
            conn.head_from.store(conn.now_mark(), Ordering::Release);
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Unflushed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.conn.unflushed.store(true, Ordering::Release);
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.conn.unflushed.store(true, Ordering::Release);
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let flushed = Pin::new(&mut self.io).poll_flush(cx);
        let conn = &self.conn;
        if let Poll::Ready(Ok(())) = flushed
            && conn.unflushed.load(Ordering::Acquire)
        {
            // An answer written out: the keep-alive idle time starts now,
            // not when hyper took its last frame (a long download would
            // otherwise spend the idle time as it goes out).
            if conn.in_flight.load(Ordering::Acquire) == 0 {
                conn.mark_idle();
            }
            conn.unflushed.store(false, Ordering::Release);
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    const LIMITS: ReadLimits = ReadLimits {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(2),
    };

    /// The read watch's deadlines: the first request's headers from the
    /// opening, none while a request or its answer is in hand, the idle
    /// limit from when the answer was written out (not from when hyper took
    /// it), a later request's headers from its first byte.
    #[tokio::test]
    async fn the_read_deadline_follows_the_connection() {
        let conn = Arc::new(Conn::new(CancellationToken::new()));
        let (near, mut far) = tokio::io::duplex(64);
        let mut io = Unflushed {
            io: near,
            conn: conn.clone(),
        };
        let opened = conn.opened;
        assert_eq!(conn.read_deadline(&LIMITS), Some(opened + LIMITS.header));
        far.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        tokio::io::AsyncReadExt::read(&mut io, &mut buf)
            .await
            .unwrap();
        assert_eq!(
            conn.read_deadline(&LIMITS),
            Some(opened + LIMITS.header),
            "the first request is timed from the opening"
        );

        let busy = Busy::enter(&conn);
        assert_eq!(conn.read_deadline(&LIMITS), None);
        io.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        drop(busy);
        assert_eq!(conn.read_deadline(&LIMITS), None, "not written out yet");
        tokio::time::sleep(Duration::from_millis(30)).await;
        let before_flush = Instant::now();
        io.flush().await.unwrap();
        let idle_until = conn.read_deadline(&LIMITS).unwrap();
        assert!(idle_until >= before_flush + LIMITS.idle - Duration::from_millis(1));

        tokio::time::sleep(Duration::from_millis(30)).await;
        let first_byte = Instant::now();
        far.write_all(b"G").await.unwrap();
        tokio::io::AsyncReadExt::read(&mut io, &mut buf)
            .await
            .unwrap();
        let head_until = conn.read_deadline(&LIMITS).unwrap();
        assert!(head_until >= first_byte + LIMITS.header - Duration::from_millis(1));
        assert!(head_until > idle_until);
    }

    #[test]
    fn the_soft_file_limit_is_only_ever_raised() {
        use super::raised_soft_limit;
        assert_eq!(raised_soft_limit(1024, 524_288), Some(524_288));
        assert_eq!(raised_soft_limit(1024, 1 << 30), Some(1 << 20));
        assert_eq!(raised_soft_limit(2_000_000, 4_000_000), None);
        assert_eq!(raised_soft_limit(4096, 4096), None);
    }

    /// As the README has it: the limit less min(256, limit / 4), so a small
    /// limit still leaves the pools and the cache their descriptors.
    #[test]
    fn the_cap_keeps_descriptors_back_below_any_limit() {
        for (limit, cap) in [
            (1_048_576, 1_048_320),
            (1024, 768),
            (512, 384),
            (200, 150),
            (8, 6),
        ] {
            assert_eq!(super::cap_under(limit), cap, "limit {limit}");
        }
    }
}
