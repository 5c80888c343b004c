//! Queue trigger: a consumer moves a job atomically into its own processing
//! list (so exactly one replica gets it and a crash does not lose it),
//! invokes the plugin, and acknowledges; failures retry with backoff, then go
//! to the dead letters. Consumers keep a liveness key so a dead replica's
//! in-flight jobs are recovered. Storage is `backends::queue`.

use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::backends::kv::Kv;
use crate::backends::queue::{
    Job, alive_key, bury, bury_job, consumers_key, processing_key, push, queue_key,
};
use crate::manifest::QueueSpec;
use crate::runtime::{Invocation, InvokeError, Runtime, Trigger};

const IDLE_POLL: Duration = Duration::from_millis(100);
/// How long a consumer pauses after its job found no free plugin slot.
const BUSY_RETRY: Duration = Duration::from_millis(250);
/// A consumer refreshes its liveness key this often...
const HEARTBEAT: Duration = Duration::from_secs(10);
/// ...and is presumed dead (its in-flight jobs re-queued) this long after the last refresh.
const PRESUMED_DEAD: Duration = Duration::from_secs(45);

/// Takes back the jobs `owner` had in flight when it died: each is moved
/// atomically into `me`'s own processing list (so two recoverers take each
/// job once, and a crash here strands nothing), then settled; returns how many.
async fn recover_in_flight(kv: &Kv, spec: &QueueSpec, owner: &str, me: &str) -> usize {
    let (from, via) = (
        processing_key(&spec.name, owner),
        processing_key(&spec.name, me),
    );
    let mut moved = 0;
    while let Ok(Some(raw)) = kv.list_move_oldest(&from, &via).await {
        moved += 1;
        settle_interrupted(kv, spec, &via, &raw, owner).await;
    }
    moved
}

/// Takes back what an earlier run under this replica's name left in flight.
async fn recover_own(kv: &Kv, spec: &QueueSpec, me: &str) -> usize {
    let own = processing_key(&spec.name, me);
    let raw = kv.list_range(&own, 0, -1).await.unwrap_or_default();
    for entry in &raw {
        settle_interrupted(kv, spec, &own, entry, me).await;
    }
    raw.len()
}

/// A job whose run was cut off by its replica's death counts that run as an
/// attempt (it may be what killed the process): back on the queue, or to the
/// dead letters when out of attempts. Removed from `list` only once settled.
async fn settle_interrupted(kv: &Kv, spec: &QueueSpec, list: &str, raw: &[u8], owner: &str) {
    let settled = match serde_json::from_slice::<Job>(raw) {
        Err(_) => bury(kv, &spec.name, raw.to_vec()).await.is_ok(),
        Ok(mut job) => {
            job.attempts += 1;
            job.last_error = Some(format!("replica \"{owner}\" stopped while running it"));
            if job.attempts >= spec.max_attempts {
                bury_job(kv, &mut job).await.is_ok()
            } else {
                push(kv, &job).await.is_ok()
            }
        }
    };
    if settled {
        let _ = kv.list_remove(list, raw, 1).await;
    }
}

/// Marks this consumer alive (first, so no one takes it for dead while it
/// registers) and (re-)registers its name. Run on every heartbeat: a replica
/// wrongly presumed dead (a long network partition) and forgotten comes back.
async fn register(kv: &Kv, queue: &str, replica: &str) {
    let _ = kv
        .set(&alive_key(queue, replica), b"1", Some(PRESUMED_DEAD))
        .await;
    let name = replica.as_bytes().to_vec();
    let _ = kv.list_remove(&consumers_key(queue), &name, 0).await;
    let _ = kv.list_push(&consumers_key(queue), &[name]).await;
}

/// Announces this consumer, takes back what an earlier run under the same
/// name left in flight, and recovers consumers that died meanwhile.
async fn announce(kv: &Kv, spec: &QueueSpec, replica: &str) {
    register(kv, &spec.name, replica).await;
    let moved = recover_own(kv, spec, replica).await;
    if moved > 0 {
        tracing::warn!(
            queue = %spec.name,
            moved,
            "took back jobs this replica left in flight before a restart"
        );
    }
    recover_dead_consumers(kv, spec, replica).await;
}

/// Re-queues the in-flight jobs of consumers whose liveness key expired
/// (crashed or killed replicas), and forgets them.
async fn recover_dead_consumers(kv: &Kv, spec: &QueueSpec, me: &str) {
    let queue = spec.name.as_str();
    let Ok(names) = kv.list_range(&consumers_key(queue), 0, -1).await else {
        return;
    };
    for raw in names {
        let name = String::from_utf8_lossy(&raw).into_owned();
        if name == me || !matches!(kv.get(&alive_key(queue, &name)).await, Ok(None)) {
            continue;
        }
        let moved = recover_in_flight(kv, spec, &name, me).await;
        let _ = kv.list_remove(&consumers_key(queue), &raw, 0).await;
        tracing::warn!(queue, replica = %name, moved, "re-queued the jobs of a consumer presumed dead");
    }
}

/// Leaves cleanly: nothing is in flight after the drain, so others need not
/// wait for the liveness key to expire. A job still in the processing list
/// (its re-queue failed) keeps the registration, so a live consumer recovers
/// it once the liveness key expires.
async fn retire(kv: &Kv, queue: &str, replica: &str) {
    if !matches!(kv.list_len(&processing_key(queue, replica)).await, Ok(0)) {
        return;
    }
    let _ = kv.delete(&alive_key(queue, replica)).await;
    let _ = kv
        .list_remove(&consumers_key(queue), replica.as_bytes(), 0)
        .await;
}

/// The delay before retry number `attempts` (1 after the first failure):
/// the queue's `backoff`, doubled per further attempt, at most 64 times it.
fn retry_delay(base: Duration, attempts: u32) -> Duration {
    base.saturating_mul(1 << attempts.saturating_sub(1).min(6))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Consumes one plugin's queue until `stop` is cancelled.
pub async fn consume(runtime: Arc<Runtime>, plugin: String, stop: CancellationToken) {
    let Some(spec) = runtime
        .plugin(&plugin)
        .and_then(|p| p.manifest.queue.clone())
    else {
        return;
    };
    let services = runtime.services.clone();
    let kv = &services.kv;
    let (queue, processing) = (
        queue_key(&spec.name),
        processing_key(&spec.name, &services.settings.replica),
    );
    let replica = services.settings.replica.clone();
    announce(kv, &spec, &replica).await;
    // The heartbeat runs beside the jobs: a long job must not look like a dead replica.
    let heartbeat_stop = stop.child_token();
    let heartbeat = tokio::spawn(keep_alive(
        services.clone(),
        spec.clone(),
        replica.clone(),
        heartbeat_stop.clone(),
    ));
    tracing::info!(plugin, queue = %spec.name, "queue consumer started");
    // Jobs claimed in a row that were not yet due: once that covers the whole
    // queue, nothing is due and the consumer idles instead of spinning.
    let mut not_due_in_a_row: u64 = 0;
    while !stop.is_cancelled() {
        let claimed = match kv.list_move_oldest(&queue, &processing).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(plugin, error = %e, "queue poll failed");
                None
            }
        };
        let Some(raw) = claimed else {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(IDLE_POLL) => continue,
            }
        };
        let Ok(mut job) = serde_json::from_slice::<Job>(&raw) else {
            tracing::error!(
                plugin,
                "dropping unreadable queue entry to the dead letters"
            );
            if bury(kv, &spec.name, raw.clone()).await.is_ok() {
                let _ = kv.list_remove(&processing, &raw, 1).await;
            }
            continue;
        };
        if job.not_before_ms.is_some_and(|t| t > now_ms()) {
            // Back to the far end of the queue, then acknowledge: at least once.
            if push(kv, &job).await.is_ok() {
                let _ = kv.list_remove(&processing, &raw, 1).await;
            }
            not_due_in_a_row += 1;
            let queued = kv.list_len(&queue).await.unwrap_or(0);
            if not_due_in_a_row >= queued {
                not_due_in_a_row = 0;
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                }
            }
            continue;
        }
        not_due_in_a_row = 0;
        job.attempts += 1;
        job.not_before_ms = None;
        let inv = Invocation {
            trigger: Trigger::Queue {
                queue: spec.name.clone(),
                id: job.id.clone(),
                payload: job.payload.clone(),
                attempt: job.attempts,
                max_attempts: spec.max_attempts,
            },
            tenant: job.tenant.clone(),
            principal: None,
            dry_run: false,
            request_id: job.id.clone(),
        };
        let result = runtime.invoke(&plugin, inv).await;
        if let Err(InvokeError::Busy(_)) = result {
            // The job never started: back on the queue with its attempts as
            // they were, after a short pause so a saturated replica does not spin.
            job.attempts -= 1;
            job.not_before_ms = Some(now_ms() + BUSY_RETRY.as_millis() as i64);
            if push(kv, &job).await.is_ok() {
                let _ = kv.list_remove(&processing, &raw, 1).await;
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(BUSY_RETRY) => {}
            }
            continue;
        }
        match result {
            Ok(_) => {
                tracing::info!(plugin, job = %job.id, attempts = job.attempts, "queue job done")
            }
            Err(e) => {
                job.last_error = Some(e.to_string());
                if job.attempts >= spec.max_attempts {
                    tracing::error!(plugin, job = %job.id, attempts = job.attempts, error = %e, "queue job dead-lettered");
                    if bury_job(kv, &mut job).await.is_err() {
                        tracing::error!(plugin, job = %job.id, "could not dead-letter; left in processing list");
                        continue;
                    }
                } else {
                    let delay = retry_delay(spec.backoff, job.attempts);
                    tracing::warn!(plugin, job = %job.id, attempts = job.attempts, ?delay, error = %e, "queue job failed; will retry");
                    // The retry waits in the queue, not here: other jobs keep flowing.
                    job.not_before_ms = Some(now_ms() + delay.as_millis() as i64);
                    // Re-queue before acknowledging: at least once, never lost.
                    if push(kv, &job).await.is_err() {
                        tracing::error!(plugin, job = %job.id, "could not re-queue; left in processing list");
                        continue;
                    }
                }
            }
        }
        if let Err(e) = kv.list_remove(&processing, &raw, 1).await {
            tracing::error!(plugin, job = %job.id, error = %e, "could not acknowledge queue job");
        }
    }
    heartbeat_stop.cancel();
    let _ = heartbeat.await;
    retire(kv, &spec.name, &replica).await;
    tracing::info!(plugin, "queue consumer stopped");
}

/// Refreshes this consumer's liveness key and recovers dead consumers' jobs
/// every [`HEARTBEAT`] until `stop`.
async fn keep_alive(
    services: Arc<crate::services::Services>,
    spec: QueueSpec,
    replica: String,
    stop: CancellationToken,
) {
    let kv = &services.kv;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(HEARTBEAT) => {}
        }
        register(kv, &spec.name, &replica).await;
        recover_dead_consumers(kv, &spec, &replica).await;
    }
}
