//! Closing a connection without resetting it (a lingering close).
//!
//! An answer given before the request's body was read (403 before an
//! upload, 413 for a declared length over the limit, 408 for a trickle)
//! ends the connection with that body still arriving. Closed at once, the
//! kernel answers the unread bytes with a reset, and a client still
//! sending (a browser, curl: no `Expect`) reports "connection reset"
//! instead of the answer it was sent. So once hyper has shut down its
//! sending side, what the client still sends is read and thrown away until
//! it closes, falls silent or has had its time, as nginx's
//! `lingering_close` does.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How long a closing connection waits for the client's next bytes.
const SILENCE: Duration = Duration::from_secs(2);
/// The longest a closing connection is drained in all.
const AT_MOST: Duration = Duration::from_secs(10);
/// Connections drained at once: past this a closing one is closed at once,
/// so a crowd of trickling clients cannot hold the descriptors the
/// connection cap keeps back (`RESERVED_FDS`, 256) for the rest.
const MAX_LINGERING: usize = 128;

static LINGERING: AtomicUsize = AtomicUsize::new(0);

/// A connection's socket that, once its sending side was shut down and its
/// client has not closed its own, is drained in the background when
/// dropped instead of closed.
pub struct Lingering {
    stream: Option<TcpStream>,
    /// hyper shut down the sending side: the answer is out, and the client
    /// may still be sending what was not read.
    shut: bool,
    /// The client closed its sending side: nothing can follow.
    ended: bool,
}

impl Lingering {
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream: Some(stream),
            shut: false,
            ended: false,
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
        if !self.shut || self.ended {
            return; // closed without an answer cut short, or by the client
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Some(slot) = LingerSlot::take() else {
            return;
        };
        runtime.spawn(drain(stream, slot));
    }
}

/// One of [`MAX_LINGERING`].
struct LingerSlot;

impl LingerSlot {
    fn take() -> Option<Self> {
        LINGERING
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_LINGERING).then_some(n + 1)
            })
            .ok()
            .map(|_| Self)
    }
}

impl Drop for LingerSlot {
    fn drop(&mut self) {
        LINGERING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Reads and drops what `stream`'s client still sends, until it closes,
/// is silent for [`SILENCE`] or [`AT_MOST`] has passed; then closes.
async fn drain(mut stream: TcpStream, _slot: LingerSlot) {
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
        let before = buf.filled().len();
        let room = buf.remaining() > 0;
        let read = Pin::new(self.stream()).poll_read(cx, buf);
        if room && matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() == before {
            self.ended = true;
        }
        read
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
    use tokio::io::AsyncWriteExt;

    /// Answered and shut down while the client still sends: the client's
    /// bytes are read until it closes, so it gets the answer and its own
    /// close, no reset.
    #[tokio::test]
    async fn an_answer_before_the_body_reaches_a_client_still_sending() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut io = Lingering::new(stream);
            let mut head = [0u8; 16];
            io.read_exact(&mut head).await.unwrap();
            io.write_all(b"refused").await.unwrap();
            io.shutdown().await.unwrap();
            drop(io);
        });
        let mut client = TcpStream::connect(addr).await.unwrap();
        // Far more than the socket buffers hold, sent after the answer.
        let body = vec![b'x'; 32 << 20];
        client.write_all(&body[..16]).await.unwrap();
        server.await.unwrap();
        client.write_all(&body).await.expect("sent whole, no reset");
        client.shutdown().await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"refused");
    }
}
