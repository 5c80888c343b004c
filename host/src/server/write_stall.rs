//! A connection's socket whose writes fail once the client reads too little
//! for too long (`Settings::write_stall`, `Settings::min_write_rate`).
//!
//! hyper has no write timeout: a client that sends requests (pipelined, or
//! one asking for a large answer) and never reads the responses leaves its
//! connection waiting on a full socket for ever, counted busy, so the
//! connection cap can never evict it. Enough of them would lock everyone
//! out, health probes included. So would clients that read a trickle, just
//! enough to make progress now and then. Writes may wait for the client at
//! most `stall` at a stretch, and in all no more than `stall` plus what the
//! client has read pays for at `min_rate`: waiting spends an allowance,
//! bytes the socket takes earn it back, and it never holds more than
//! `stall`, so a client cannot bank credit by letting buffers fill first. A
//! client that reads at `min_rate` or faster keeps its connection however
//! long the answer; one reading slower is cut off, the slower the sooner.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// How slowly a client may read what it asked for.
#[derive(Debug, Clone, Copy)]
pub struct WritePace {
    /// The longest writes may wait at a stretch.
    pub stall: Duration,
    /// Bytes per second that pay for waiting (0: only `stall` counts).
    pub min_rate: u32,
}

pub struct WriteStallLimited<S> {
    io: S,
    pace: WritePace,
    /// How long writes may still wait, at most `pace.stall`.
    allowance: Duration,
    /// The current stall's start and end, while writes are waiting.
    stalled_since: Option<Instant>,
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteStallLimited<S> {
    pub fn new(io: S, pace: WritePace) -> Self {
        Self {
            io,
            pace,
            allowance: pace.stall,
            stalled_since: None,
            stall: None,
        }
    }

    /// What `written` bytes earn back.
    fn earned(&self, written: usize) -> Duration {
        match self.pace.min_rate {
            0 => self.pace.stall,
            rate => Duration::from_nanos(
                (written as u128 * 1_000_000_000 / rate as u128).min(u64::MAX as u128) as u64,
            ),
        }
    }

    /// Passes on a write's outcome (`written` bytes taken, if it is ready);
    /// a write still waiting once the allowance is spent fails instead.
    fn bounded<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
        written: impl FnOnce(&T) -> usize,
    ) -> Poll<io::Result<T>> {
        if let Poll::Ready(result) = &polled {
            let now = Instant::now();
            let waited = self
                .stalled_since
                .take()
                .map_or(Duration::ZERO, |since| now - since);
            let earned = result.as_ref().map_or(0, written);
            self.allowance = self
                .allowance
                .saturating_sub(waited)
                .saturating_add(self.earned(earned))
                .min(self.pace.stall);
            return polled;
        }
        let stall = match self.stalled_since {
            Some(_) => self.stall.as_mut().expect("a stall has its end"),
            None => {
                let now = Instant::now();
                self.stalled_since = Some(now);
                let end = now + self.allowance;
                match &mut self.stall {
                    Some(stall) => {
                        stall.as_mut().reset(end);
                        stall
                    }
                    None => self.stall.insert(Box::pin(tokio::time::sleep_until(end))),
                }
            }
        };
        match stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read too little for too long (the write-stall limit)",
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
        this.bounded(cx, polled, |n| *n)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.bounded(cx, polled, |n| *n)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.bounded(cx, polled, |_| 0)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_shutdown(cx);
        this.bounded(cx, polled, |_| 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn pace(stall_ms: u64, min_rate: u32) -> WritePace {
        WritePace {
            stall: Duration::from_millis(stall_ms),
            min_rate,
        }
    }

    #[tokio::test]
    async fn a_reader_that_stops_fails_the_write_and_one_that_reads_does_not() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let mut limited = WriteStallLimited::new(ours, pace(500, 1024));
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

    /// Writes 4 KiB to a client that reads 64 bytes every 20 ms (about
    /// 3 KiB/s), never pausing near the stall limit.
    async fn to_a_trickle(pace: WritePace) -> io::Result<()> {
        let (ours, mut theirs) = tokio::io::duplex(256);
        let reader = tokio::spawn(async move {
            let mut sink = [0u8; 64];
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                match tokio::io::AsyncReadExt::read(&mut theirs, &mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        });
        let mut limited = WriteStallLimited::new(ours, pace);
        let written = limited.write_all(&[b'x'; 4096]).await;
        drop(limited);
        reader.await.unwrap();
        written
    }

    #[tokio::test]
    async fn a_reader_slower_than_the_minimum_rate_fails_the_write() {
        // No rate: each read is progress, so the trickle gets it all.
        to_a_trickle(pace(300, 0)).await.unwrap();
        // Faster than the minimum: it gets it all too.
        to_a_trickle(pace(300, 1024)).await.unwrap();
        // Slower: each wait costs more than the bytes read earn back.
        let err = to_a_trickle(pace(300, 1 << 20)).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
