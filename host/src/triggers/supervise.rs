//! Background triggers that outlive a panic. A queue worker or a schedule
//! runs for the life of a plugin set; a panic in one (in the host's own
//! code: a plugin's trap is an error, not a panic) would end it for good,
//! until a reload, and its queue would stop being read or its slots stop
//! firing. Each is run again instead, after a pause, and the panic is
//! logged as an error. (An HTTP invocation's panic fails only that request:
//! `http::run_to_the_end`.)

use futures::FutureExt;
use std::panic::AssertUnwindSafe;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The pause before a task that panicked runs again: a panic that repeats
/// at once does not spin.
pub const RESTART_PAUSE: Duration = Duration::from_secs(1);

/// The text of a panic's payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message")
}

/// Runs `task()` until it returns; one that panics is logged as `what`
/// and started again after `pause`, unless `stop` is cancelled by then.
pub async fn restarting<F>(
    what: &str,
    stop: &CancellationToken,
    pause: Duration,
    task: impl Fn() -> F,
) where
    F: Future<Output = ()>,
{
    loop {
        let Err(panic) = AssertUnwindSafe(task()).catch_unwind().await else {
            return;
        };
        tracing::error!(
            task = what,
            panic = panic_message(&*panic),
            "background task panicked; it starts again"
        );
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn a_task_that_panics_runs_again_until_it_returns() {
        let runs = AtomicU32::new(0);
        let stop = CancellationToken::new();
        restarting("test", &stop, Duration::from_millis(1), || async {
            if runs.fetch_add(1, Ordering::SeqCst) < 2 {
                panic!("deliberate");
            }
        })
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_stopped_task_is_not_started_again() {
        let runs = AtomicU32::new(0);
        let stop = CancellationToken::new();
        stop.cancel();
        restarting("test", &stop, Duration::from_secs(60), || async {
            runs.fetch_add(1, Ordering::SeqCst);
            panic!("deliberate");
        })
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
