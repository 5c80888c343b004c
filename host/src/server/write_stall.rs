//! A connection's socket whose writes fail once they have made no progress
//! for a while (`Settings::write_stall`).
//!
//! hyper has no write timeout: a client that sends requests (pipelined, or
//! one asking for a large answer) and never reads the responses leaves its
//! connection waiting on a full socket for ever, counted busy, so the
//! connection cap can never evict it. Enough of them would lock everyone
//! out, health probes included. What counts is time without progress: a
//! client that keeps reading, however slowly, keeps its connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub struct WriteStallLimited<S> {
    io: S,
    limit: Duration,
    /// The stall's end, made at the first stall and reset at each later one.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whether writes are waiting now.
    stalled: bool,
}

impl<S> WriteStallLimited<S> {
    pub fn new(io: S, limit: Duration) -> Self {
        Self {
            io,
            limit,
            stall: None,
            stalled: false,
        }
    }

    /// Passes on a write's outcome; a write still waiting once the stall
    /// has lasted `limit` fails instead.
    fn bounded<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled = false;
            return polled;
        }
        let end = tokio::time::Instant::now() + self.limit;
        let stall = match &mut self.stall {
            Some(stall) if self.stalled => stall,
            Some(stall) => {
                stall.as_mut().reset(end);
                stall
            }
            None => self.stall.insert(Box::pin(tokio::time::sleep_until(end))),
        };
        self.stalled = true;
        match stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing for the write-stall limit",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteStallLimited<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteStallLimited<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.bounded(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.bounded(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.bounded(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_shutdown(cx);
        this.bounded(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_reader_that_stops_fails_the_write_and_one_that_reads_does_not() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let mut limited = WriteStallLimited::new(ours, Duration::from_millis(500));
        let chunk = vec![b'x'; 4096];
        // The client reads: every write gets through, however long in all.
        let reader = tokio::spawn(async move {
            let mut sink = vec![0u8; 4096];
            let mut total = 0;
            while total < 4 * 4096 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                total += tokio::io::AsyncReadExt::read(&mut theirs, &mut sink)
                    .await
                    .unwrap();
            }
            theirs
        });
        for _ in 0..4 {
            limited.write_all(&chunk).await.unwrap();
        }
        let _theirs = reader.await.unwrap();
        // It stops reading: the write fails once stalled for the limit.
        let started = std::time::Instant::now();
        let err = limited.write_all(&chunk).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(500));
    }
}
