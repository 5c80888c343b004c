//! Closing a connection without resetting it (a lingering close).
//!
//! An answer given before the request's body was read (403 before an
//! upload, 413 for a declared length over the limit, 408 for a trickle)
//! ends the connection with that body still arriving. Closed at once, the
//! kernel answers the unread bytes with a reset, and a client still
//! sending (a browser, curl: no `Expect`) reports "connection reset"
//! instead of the answer it was sent. So when hyper has shut down its
//! sending side after an answer with the request's body not read to its
//! end, or with bytes of the client's waiting, what the client still sends
//! is read and thrown away until it closes, falls silent or has had its
//! time, as nginx's `lingering_close` does. (Bytes waiting at that moment
//! alone say little: a client slowed down for a moment sends the rest
//! after.) Any other close is at once: a `Connection: close` probe's, the
//! server's own (an idle connection evicted at the cap, a shutdown), one
//! whose client closed first.

use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

/// How long a closing connection waits for the client's next bytes.
const SILENCE: Duration = Duration::from_secs(2);
/// The longest a closing connection is drained in all.
const AT_MOST: Duration = Duration::from_secs(10);
/// Most connections of a listener drained at once.
const MAX_LINGERING: usize = 128;

/// How many of a listener's connections linger, and how many may: each
/// holds its place under the connection cap, so at most a quarter of the
/// cap (and [`MAX_LINGERING`]); past that a closing one is closed at once,
/// and clients that keep sending after their answer cannot hold the cap.
pub struct Lingerers {
    now: AtomicUsize,
    most: usize,
}

impl Lingerers {
    pub fn under(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            now: AtomicUsize::new(0),
            most: (cap / 4).clamp(1, MAX_LINGERING),
        })
    }
}

/// A connection's socket that, once hyper shut down its sending side after
/// an answer, is drained in the background when dropped instead of closed.
/// It holds the connection's place under the cap until it is closed, so
/// the descriptors open never exceed the cap.
pub struct Lingering {
    stream: Option<TcpStream>,
    place: Option<OwnedSemaphorePermit>,
    lingerers: Arc<Lingerers>,
    /// Cancelled when the server closes the connection itself (evicted
    /// idle, or shutting down): nothing is left unread then.
    closed_by_server: CancellationToken,
    /// The request being answered has a body not read to its end (set by
    /// the connection as requests come and are read).
    body_unread: Arc<AtomicBool>,
    /// hyper shut down the sending side: the answer is out.
    shut: bool,
}

impl Lingering {
    pub fn new(
        stream: TcpStream,
        place: OwnedSemaphorePermit,
        lingerers: Arc<Lingerers>,
        closed_by_server: CancellationToken,
        body_unread: Arc<AtomicBool>,
    ) -> Self {
        Self {
            stream: Some(stream),
            place: Some(place),
            lingerers,
            closed_by_server,
            body_unread,
            shut: false,
        }
    }

    fn stream(&mut self) -> &mut TcpStream {
        self.stream.as_mut().expect("taken only on drop")
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        if !self.shut || self.closed_by_server.is_cancelled() {
            return;
        }
        let unread = match waiting(&stream) {
            Waiting::Bytes => true,
            Waiting::End => false,
            Waiting::Nothing => self.body_unread.load(Ordering::Acquire),
        };
        if !unread {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Some(slot) = LingerSlot::take(&self.lingerers) else {
            return;
        };
        runtime.spawn(drain(stream, slot, self.place.take()));
    }
}

/// What the client has sent that nobody has read.
enum Waiting {
    Bytes,
    /// Its close: nothing can follow to be reset over.
    End,
    Nothing,
}

fn waiting(stream: &TcpStream) -> Waiting {
    let mut byte = 0u8;
    // SAFETY: peeks at most one byte into `byte`, without blocking, on the
    // stream's own descriptor, open for the call.
    let peeked = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&raw mut byte).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match peeked {
        1.. => Waiting::Bytes,
        0 => Waiting::End,
        _ => Waiting::Nothing,
    }
}

/// One of a listener's [`Lingerers`].
struct LingerSlot(Arc<Lingerers>);

impl LingerSlot {
    fn take(lingerers: &Arc<Lingerers>) -> Option<Self> {
        lingerers
            .now
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < lingerers.most).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(lingerers.clone()))
    }
}

impl Drop for LingerSlot {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Reads and drops what `stream`'s client still sends, until it closes,
/// is silent for [`SILENCE`] or [`AT_MOST`] has passed; then closes, and
/// gives the connection's place back.
async fn drain(mut stream: TcpStream, _slot: LingerSlot, _place: Option<OwnedSemaphorePermit>) {
    let until = tokio::time::Instant::now() + AT_MOST;
    let mut sink = vec![0u8; 16 * 1024];
    loop {
        let wait = until.min(tokio::time::Instant::now() + SILENCE);
        match tokio::time::timeout_at(wait, stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(self.stream()).poll_read(cx, buf)
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(self.stream()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(self.stream()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(self.stream()).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let shut = Pin::new(self.stream()).poll_shutdown(cx);
        if matches!(shut, Poll::Ready(Ok(()))) {
            self.shut = true;
        }
        shut
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::AsyncWriteExt;
    use tokio::sync::Semaphore;

    /// A connection accepted on this machine, its place taken from a cap of
    /// one, and what closes it from the server's side.
    /// A connection accepted on this machine, its place taken from a cap of
    /// one, what closes it from the server's side, and whether the request
    /// it answers has a body unread (yes).
    async fn connection() -> (
        TcpStream,
        Lingering,
        Arc<Semaphore>,
        CancellationToken,
        Arc<AtomicBool>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let places = Arc::new(Semaphore::new(1));
        let place = places.clone().try_acquire_owned().unwrap();
        let close = CancellationToken::new();
        let unread = Arc::new(AtomicBool::new(true));
        let io = Lingering::new(
            accepted.unwrap().0,
            place,
            Lingerers::under(1024),
            close.clone(),
            unread.clone(),
        );
        (client.unwrap(), io, places, close, unread)
    }

    /// Answered and shut down while the client still sends: the client's
    /// bytes are read until it closes, so it gets the answer and its own
    /// close, no reset; the connection's place is held until then.
    #[tokio::test]
    async fn an_answer_before_the_body_reaches_a_client_still_sending() {
        let (mut client, mut io, places, ..) = connection().await;
        // Far more than the socket buffers hold, all sent after the answer:
        // nothing of it waits unread as the connection closes.
        let body = vec![b'x'; 32 << 20];
        client.write_all(&body[..16]).await.unwrap();
        let mut head = [0u8; 16];
        io.read_exact(&mut head).await.unwrap();
        io.write_all(b"refused").await.unwrap();
        io.shutdown().await.unwrap();
        drop(io);
        client.write_all(&body).await.expect("sent whole, no reset");
        assert_eq!(places.available_permits(), 0, "its place is held meanwhile");
        client.shutdown().await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"refused");
        let given_back = tokio::time::timeout(Duration::from_secs(5), places.acquire()).await;
        assert!(
            matches!(given_back, Ok(Ok(_))),
            "its place given back once the client closed"
        );
    }

    /// A connection the server closes itself (an idle one evicted at the
    /// cap), one whose answer leaves nothing unread (a `Connection: close`
    /// probe's), or whose client closed first, gives its place back at once.
    #[tokio::test]
    async fn a_close_with_nothing_to_reset_over_is_at_once() {
        let (client, mut io, places, close, _) = connection().await;
        close.cancel();
        io.shutdown().await.unwrap();
        drop(io);
        assert_eq!(places.available_permits(), 1, "evicted");
        drop(client);

        let (client, mut io, places, _, unread) = connection().await;
        unread.store(false, Ordering::Release);
        io.shutdown().await.unwrap();
        drop(io);
        assert_eq!(places.available_permits(), 1, "a probe's");
        drop(client);

        let (mut client, mut io, places, ..) = connection().await;
        client.shutdown().await.unwrap();
        let mut end = [0u8; 1];
        assert_eq!(io.read(&mut end).await.unwrap(), 0);
        io.shutdown().await.unwrap();
        drop(io);
        assert_eq!(places.available_permits(), 1, "the client closed first");
    }
}
