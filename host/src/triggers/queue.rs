//! Queue trigger: jobs live in kv lists under the host namespace. A consumer
//! moves a job atomically into its own processing list (so exactly one
//! replica gets it and a crash does not lose it), invokes the plugin, and
//! acknowledges; failures retry with backoff, then go to the dead letters.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::backends::kv::{HOST_NAMESPACE, Kv};
use crate::runtime::{Invocation, Runtime, Trigger};

const MAX_PAYLOAD: usize = 1 << 20;
/// Dead letters kept per queue.
pub const DLQ_KEEP: i64 = 1000;
const IDLE_POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub queue: String,
    pub payload: String,
    /// Attempts made so far.
    pub attempts: u32,
    pub enqueued_at: String,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub tenant: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("{0}")]
    Invalid(String),
    #[error("queue unavailable")]
    Unavailable,
}

pub fn queue_key(queue: &str) -> String {
    format!("{HOST_NAMESPACE}queue:{queue}")
}

pub fn dead_letter_key(queue: &str) -> String {
    format!("{HOST_NAMESPACE}dlq:{queue}")
}

fn processing_key(queue: &str, replica: &str) -> String {
    format!("{HOST_NAMESPACE}queue:{queue}:processing:{replica}")
}

/// Adds a job to a queue; returns its id.
pub async fn enqueue(kv: &Kv, queue: &str, payload: &str) -> Result<String, EnqueueError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(EnqueueError::Invalid(format!(
            "payload of {} bytes exceeds {MAX_PAYLOAD}",
            payload.len()
        )));
    }
    if queue.is_empty() || queue.contains(char::is_whitespace) {
        return Err(EnqueueError::Invalid(format!("bad queue name \"{queue}\"")));
    }
    let job = Job {
        id: uuid::Uuid::new_v4().simple().to_string(),
        queue: queue.to_string(),
        payload: payload.to_string(),
        attempts: 0,
        enqueued_at: chrono::Utc::now().to_rfc3339(),
        last_error: None,
        tenant: None,
    };
    push(kv, &job).await?;
    Ok(job.id)
}

async fn push(kv: &Kv, job: &Job) -> Result<(), EnqueueError> {
    let bytes = serde_json::to_vec(job).expect("a job always serialises");
    kv.list_push(&queue_key(&job.queue), &[bytes])
        .await
        .map(|_| ())
        .map_err(|_| EnqueueError::Unavailable)
}

fn backoff(attempts: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempts.min(6))).min(Duration::from_secs(10))
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
    tracing::info!(plugin, queue = %spec.name, "queue consumer started");
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
            let _ = kv
                .list_push(&dead_letter_key(&spec.name), std::slice::from_ref(&raw))
                .await;
            let _ = kv.list_remove(&processing, &raw, 1).await;
            continue;
        };
        job.attempts += 1;
        let inv = Invocation {
            trigger: Trigger::Queue {
                queue: spec.name.clone(),
                id: job.id.clone(),
                payload: job.payload.clone(),
                attempt: job.attempts,
            },
            tenant: job.tenant.clone(),
            principal: None,
            dry_run: false,
            request_id: job.id.clone(),
        };
        let result = runtime.invoke(&plugin, inv).await;
        match result {
            Ok(_) => {
                tracing::info!(plugin, job = %job.id, attempts = job.attempts, "queue job done")
            }
            Err(e) => {
                job.last_error = Some(e.to_string());
                if job.attempts >= spec.max_attempts {
                    tracing::error!(plugin, job = %job.id, attempts = job.attempts, error = %e, "queue job dead-lettered");
                    let dl = serde_json::to_vec(&job).expect("a job always serialises");
                    let key = dead_letter_key(&spec.name);
                    if kv.list_push(&key, &[dl]).await.is_ok() {
                        let _ = kv.list_trim(&key, 0, DLQ_KEEP - 1).await;
                    }
                } else {
                    tracing::warn!(plugin, job = %job.id, attempts = job.attempts, error = %e, "queue job failed; will retry");
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::time::sleep(backoff(job.attempts)) => {}
                    }
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
    tracing::info!(plugin, "queue consumer stopped");
}
