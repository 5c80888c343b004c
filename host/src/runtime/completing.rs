//! Work that must finish once begun, run without a task of its own.
//!
//! A statement begun for a plugin must complete (commit or roll back, with
//! its audit record) even if the plugin is cut off mid-call, and an HTTP
//! invocation must finish its accounting even if the client goes away.
//! Spawning each piece as a task gives that, but costs a task, a wake-up of
//! another worker and a join on every call. [`Completing`] runs the work in
//! the caller's own task instead; only when it is dropped unfinished does it
//! move the rest of the work into a task on a tracker that someone waits for
//! (the invocation's, before the runtime reports it; the process's
//! `Services::unfinished`, before shutdown ends).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio_util::task::TaskTracker;

/// `work`, polled in place, finished in a task if dropped before it is done.
pub struct Completing<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    work: Option<Pin<Box<F>>>,
    tracker: TaskTracker,
}

impl<F> Completing<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    /// Finished, if dropped early, as a task on `tracker`.
    pub fn tracked(work: F, tracker: &TaskTracker) -> Self {
        Self {
            work: Some(Box::pin(work)),
            tracker: tracker.clone(),
        }
    }
}

impl<F> Future for Completing<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        // Out of `self` while polled: work that panics is dropped as the
        // panic unwinds, never handed on to a task to be polled again.
        let mut work = this.work.take().expect("polled after it completed");
        let polled = work.as_mut().poll(cx);
        if polled.is_pending() {
            this.work = Some(work);
        }
        polled
    }
}

impl<F> Drop for Completing<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn drop(&mut self) {
        let Some(work) = self.work.take() else {
            return;
        };
        // Dropped outside a runtime only as the process ends: nothing can run it.
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::error!("unfinished work dropped outside the runtime");
            return;
        };
        drop(self.tracker.spawn_on(work, &handle));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    /// Work that sets a flag after a pause.
    fn slow_work(done: &Arc<AtomicBool>) -> impl Future<Output = u8> + Send + 'static {
        let done = done.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            done.store(true, Ordering::SeqCst);
            7
        }
    }

    #[tokio::test]
    async fn runs_in_place_when_awaited() {
        let done = Arc::new(AtomicBool::new(false));
        let tracker = TaskTracker::new();
        assert_eq!(Completing::tracked(slow_work(&done), &tracker).await, 7);
        assert!(done.load(Ordering::SeqCst));
        assert!(tracker.is_empty(), "no task was needed");
    }

    #[tokio::test]
    async fn finishes_on_the_tracker_when_cut_off() {
        let done = Arc::new(AtomicBool::new(false));
        let tracker = TaskTracker::new();
        let cut = tokio::time::timeout(
            Duration::from_millis(5),
            Completing::tracked(slow_work(&done), &tracker),
        )
        .await;
        assert!(cut.is_err(), "the caller gave up first");
        assert!(!done.load(Ordering::SeqCst));
        tracker.close();
        tracker.wait().await;
        assert!(done.load(Ordering::SeqCst), "the work still finished");
    }

    #[tokio::test]
    async fn work_that_panicked_is_not_run_again() {
        use futures::FutureExt;
        let tracker = TaskTracker::new();
        let work = Completing::tracked(async { panic!("deliberate") }, &tracker);
        let caught = std::panic::AssertUnwindSafe(work).catch_unwind().await;
        assert!(caught.is_err());
        assert!(tracker.is_empty(), "nothing was handed to a task");
    }
}
