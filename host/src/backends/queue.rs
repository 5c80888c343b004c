//! Queue storage: jobs live in kv lists under the host namespace. The key
//! layout, enqueueing, dead letters (listing, replay) are here, for
//! the queue capability, the CLI and the consumer alike; the consumer loop
//! and replica liveness are the queue trigger's (`triggers/queue.rs`).

use serde::{Deserialize, Serialize};

use crate::backends::kv::{HOST_NAMESPACE, Kv, KvError};

const MAX_PAYLOAD: usize = 1 << 20;
/// Dead letters kept per queue.
pub const DLQ_KEEP: i64 = 1000;

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
    /// When the job was dead-lettered (RFC 3339, UTC).
    #[serde(default)]
    pub dead_at: Option<String>,
    /// Until then (milliseconds since the epoch) the job is not run: an
    /// entry an older release queued to wait in the queue itself, moved to
    /// the retrying set when claimed. Retries now wait in that set, scored
    /// by this time, and carry none.
    #[serde(default)]
    pub not_before_ms: Option<i64>,
}

impl Job {
    /// The job as a queue stores it.
    pub fn entry(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a job always serialises")
    }

    /// The job as the dead letters store it, stamped with when.
    pub fn dead_letter_entry(&mut self) -> Vec<u8> {
        self.dead_at = Some(now_rfc3339());
        self.entry()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("{0}")]
    Invalid(String),
    #[error("queue unavailable")]
    Unavailable,
}

/// Now as the rest of the API writes times, `2026-11-24T14:30:00.123Z`
/// (chrono's own writes `+00:00` and nine digits, which Python before 3.11
/// cannot parse).
fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn queue_key(queue: &str) -> String {
    format!("{HOST_NAMESPACE}queue:{queue}")
}

pub fn dead_letter_key(queue: &str) -> String {
    format!("{HOST_NAMESPACE}dlq:{queue}")
}

/// The jobs waiting for a retry: a sorted set scored by when each is due,
/// moved back onto the queue as they come due (so no consumer polls them).
pub fn retrying_key(queue: &str) -> String {
    format!("{HOST_NAMESPACE}queue:{queue}:retrying")
}

pub fn processing_key(queue: &str, replica: &str) -> String {
    format!("{HOST_NAMESPACE}queue:{queue}:processing:{replica}")
}

/// The replicas that have consumed this queue (a list of names).
pub fn consumers_key(queue: &str) -> String {
    format!("{HOST_NAMESPACE}queue:{queue}:consumers")
}

pub fn alive_key(queue: &str, replica: &str) -> String {
    format!("{HOST_NAMESPACE}queue:{queue}:alive:{replica}")
}

/// Adds a job for `tenant` (if any) to a queue; returns its id.
pub async fn enqueue(
    kv: &Kv,
    queue: &str,
    tenant: Option<&str>,
    payload: &str,
) -> Result<String, EnqueueError> {
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
        enqueued_at: now_rfc3339(),
        last_error: None,
        tenant: tenant.map(str::to_string),
        dead_at: None,
        not_before_ms: None,
    };
    push(kv, &job).await?;
    Ok(job.id)
}

/// The newest `limit` dead letters of a queue, newest first, refused as
/// invalid when they come to more than `within` bytes (what the caller can
/// take in: a plugin's memory). Entries that do not parse as jobs
/// (dead-lettered because they were unreadable) are skipped.
pub async fn dead_letters(
    kv: &Kv,
    queue: &str,
    limit: u32,
    within: usize,
) -> Result<Vec<Job>, EnqueueError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let raw = kv
        .list_range_within(&dead_letter_key(queue), 0, i64::from(limit) - 1, within)
        .await
        .map_err(|e| match e {
            KvError::TooLarge { limit: bytes } => EnqueueError::Invalid(format!(
                "the newest {limit} dead letters of \"{queue}\" come to more than {bytes} bytes; ask for fewer"
            )),
            _ => EnqueueError::Unavailable,
        })?;
    Ok(raw
        .iter()
        .filter_map(|r| serde_json::from_slice(r).ok())
        .collect())
}

/// Dead letter `id` of `queue`, left where it is; `None` when there is none.
pub async fn dead_letter(kv: &Kv, queue: &str, id: &str) -> Result<Option<Job>, EnqueueError> {
    let found = find_dead_letter(kv, &dead_letter_key(queue), id).await?;
    Ok(found.map(|(_, job)| job))
}

/// Moves dead letter `id` back onto its queue with a fresh attempt count and
/// returns it as it was dead-lettered; `None` when there is no such dead
/// letter. The move is one atomic step, so two concurrent replays of one id
/// enqueue it once: only one removal wins.
pub async fn replay(kv: &Kv, queue: &str, id: &str) -> Result<Option<Job>, EnqueueError> {
    let key = dead_letter_key(queue);
    let Some((entry, dead)) = find_dead_letter(kv, &key, id).await? else {
        return Ok(None);
    };
    let job = Job {
        attempts: 0,
        dead_at: None,
        not_before_ms: None,
        ..dead.clone()
    };
    // One atomic step: a caller cut off mid-call (a plugin's timeout) or a
    // lost reply leaves the job in one list or the other, never in neither.
    let moved = kv
        .list_replace(&key, &entry, &queue_key(&job.queue), &job.entry())
        .await
        .map_err(|_| EnqueueError::Unavailable)?;
    if !moved {
        return Ok(None);
    }
    Ok(Some(dead))
}

/// Dead letters read at a time while looking for one: each may be a
/// megabyte of payload, and a queue keeps a thousand.
const SCAN_CHUNK: i64 = 16;
/// Most bytes one such read brings into the host.
const SCAN_BYTES: usize = 16 << 20;

/// Dead letter `id` of the list at `key`, as stored and as a job, read a
/// few at a time so the host never holds the whole list. (Entries removed
/// ahead of it meanwhile, by another replay, can shift it past the scan: it
/// is then not found this time.)
async fn find_dead_letter(
    kv: &Kv,
    key: &str,
    id: &str,
) -> Result<Option<(Vec<u8>, Job)>, EnqueueError> {
    let (mut start, mut step) = (0, SCAN_CHUNK);
    loop {
        let read = kv.list_range_within(key, start, start + step - 1, SCAN_BYTES);
        let chunk = match read.await {
            Ok(chunk) => chunk,
            // Large letters (a payload of control characters, escaped six
            // times over): one at a time from here on.
            Err(KvError::TooLarge { .. }) if step > 1 => {
                step = 1;
                continue;
            }
            // One letter larger than a job can be: not the one replayed.
            Err(KvError::TooLarge { .. }) => {
                start += 1;
                continue;
            }
            Err(_) => return Err(EnqueueError::Unavailable),
        };
        if chunk.is_empty() {
            return Ok(None);
        }
        let found = chunk.into_iter().find_map(|r| {
            let job: Job = serde_json::from_slice(&r).ok()?;
            (job.id == id).then_some((r, job))
        });
        if found.is_some() {
            return Ok(found);
        }
        start += step;
    }
}

/// Puts a job at the far end of its queue.
pub async fn push(kv: &Kv, job: &Job) -> Result<(), EnqueueError> {
    kv.list_push(&queue_key(&job.queue), &[job.entry()])
        .await
        .map(|_| ())
        .map_err(|_| EnqueueError::Unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dead letter deep in a long list (past many reads of a few) is
    /// found and moved back, once; an unknown id is not found.
    #[tokio::test]
    async fn a_dead_letter_deep_in_the_list_is_replayed_once() {
        let kv = Kv::connect(None, "t:").await.unwrap();
        let mut ids = Vec::new();
        for n in 0..(SCAN_CHUNK * 3 + 5) {
            let mut job = Job {
                id: format!("job-{n}"),
                queue: "q".into(),
                payload: "{}".into(),
                attempts: 5,
                enqueued_at: "2026-12-07T00:00:00Z".into(),
                last_error: Some("HTTP 500".into()),
                tenant: None,
                dead_at: None,
                not_before_ms: None,
            };
            let entry = job.dead_letter_entry();
            kv.list_push(&dead_letter_key("q"), &[entry]).await.unwrap();
            ids.push(job.id);
        }
        // The first pushed is the deepest: the list is newest first.
        let deepest = &ids[0];
        let dead = replay(&kv, "q", deepest).await.unwrap().expect("found");
        assert_eq!((dead.id.as_str(), dead.attempts), (deepest.as_str(), 5));
        let queued = kv.list_range(&queue_key("q"), 0, -1).await.unwrap();
        assert_eq!(queued.len(), 1);
        let job: Job = serde_json::from_slice(&queued[0]).unwrap();
        assert_eq!((job.id.as_str(), job.attempts), (deepest.as_str(), 0));
        assert!(replay(&kv, "q", deepest).await.unwrap().is_none());
        assert!(replay(&kv, "q", "no-such").await.unwrap().is_none());
        let left = kv.list_range(&dead_letter_key("q"), 0, -1).await.unwrap();
        assert_eq!(left.len(), ids.len() - 1);
    }

    /// Dead letters too large to read sixteen at a time within the bound
    /// (payloads of control characters, escaped six times over) are read
    /// one at a time: the one asked for is still found.
    #[tokio::test]
    async fn large_dead_letters_are_read_one_at_a_time() {
        let kv = Kv::connect(None, "t:").await.unwrap();
        let controls = "\u{1}".repeat(MAX_PAYLOAD);
        for n in 0..4 {
            let mut job = Job {
                id: format!("job-{n}"),
                queue: "q".into(),
                payload: controls.clone(),
                attempts: 5,
                enqueued_at: "2026-12-07T00:00:00Z".into(),
                last_error: None,
                tenant: None,
                dead_at: None,
                not_before_ms: None,
            };
            let entry = job.dead_letter_entry();
            assert!(entry.len() > 5 * MAX_PAYLOAD);
            kv.list_push(&dead_letter_key("q"), &[entry]).await.unwrap();
        }
        let key = dead_letter_key("q");
        let whole = kv
            .list_range_within(&key, 0, SCAN_CHUNK - 1, SCAN_BYTES)
            .await;
        assert!(matches!(whole, Err(KvError::TooLarge { .. })));
        let dead = replay(&kv, "q", "job-0").await.unwrap().expect("found");
        assert_eq!(dead.id, "job-0");
    }
}
