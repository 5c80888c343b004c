//! Queue trigger: a consumer moves a job atomically into its own processing
//! list (so exactly one replica gets it and a crash does not lose it),
//! invokes the plugin, and acknowledges; failures retry with backoff (each
//! waiting in a sorted set by due time, moved back onto the queue when due,
//! so waiting retries cost no polling), then go to the dead letters.
//! Consumers keep a liveness key so a dead replica's in-flight jobs are
//! recovered. Storage is `backends::queue`.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use crate::backends::kv::{Kv, KvError, Released};
use crate::backends::queue::{
    DLQ_KEEP, Job, alive_key, consumers_key, dead_letter_key, processing_key, queue_key,
    retrying_key,
};
use crate::manifest::QueueSpec;
use crate::runtime::{Invocation, InvokeError, Output, Runtime, Trigger, answered_success};

const IDLE_POLL: Duration = Duration::from_millis(100);
/// The longest pause between polls that failed in a row.
const OUTAGE_POLL_MAX: Duration = Duration::from_secs(2);

/// The pause after the `n`th poll failed in a row: doubling from
/// [`IDLE_POLL`] up to [`OUTAGE_POLL_MAX`].
fn outage_pause(n: u32) -> Duration {
    IDLE_POLL
        .saturating_mul(1 << n.saturating_sub(1).min(16))
        .min(OUTAGE_POLL_MAX)
}
/// The longest a consumer goes without looking for retries come due (one
/// another consumer set aside may be due before any this one knows of).
const RELEASE_EVERY: Duration = Duration::from_secs(1);
/// Retries moved back onto the queue per look; a full batch looks again at once.
const RELEASE_BATCH: u32 = 100;
/// The longest pause between tries to settle a job Redis did not take.
const SETTLE_RETRY_MAX: Duration = Duration::from_secs(5);
/// How long a consumer pauses after its job found no free plugin slot.
const BUSY_RETRY: Duration = Duration::from_millis(250);
/// A consumer refreshes its liveness key this often...
const HEARTBEAT: Duration = Duration::from_secs(5);
/// ...and is presumed dead (its in-flight jobs re-queued) this long after the last refresh.
const PRESUMED_DEAD: Duration = Duration::from_secs(45);

/// Where an entry taken from a processing list goes.
enum Next {
    /// Acknowledged: the job is done.
    Done,
    /// This entry goes onto the queue.
    Queue(Vec<u8>),
    /// This entry waits in the retrying set until then (ms since the epoch).
    Retry(Vec<u8>, i64),
    /// This entry goes to the dead letters.
    DeadLetters(Vec<u8>),
}

impl Next {
    fn name(&self) -> &'static str {
        match self {
            Next::Done => "done",
            Next::Queue(_) => "queued again",
            Next::Retry(..) => "retry",
            Next::DeadLetters(_) => "dead letter",
        }
    }
}

/// Moves `raw` out of processing list `list` to where `next` says, in one
/// atomic step (so repeating it after a lost reply moves nothing twice);
/// false when `raw` was no longer there.
async fn settle(
    kv: &Kv,
    queue: &str,
    list: &str,
    raw: &[u8],
    next: &Next,
) -> Result<bool, KvError> {
    match next {
        Next::Done => kv.list_remove(list, raw, 1).await.map(|n| n > 0),
        Next::Queue(entry) => kv.list_replace(list, raw, &queue_key(queue), entry).await,
        Next::Retry(entry, due) => {
            kv.list_defer(list, raw, (&retrying_key(queue), *due), entry)
                .await
        }
        Next::DeadLetters(entry) => {
            let key = dead_letter_key(queue);
            let moved = kv.list_replace(list, raw, &key, entry).await?;
            // The oldest past the newest DLQ_KEEP go: said loudly, since
            // no replay can reach them any more (their rows stay failed).
            if let Ok(len) = kv.list_len(&key).await
                && len > DLQ_KEEP as u64
            {
                tracing::error!(
                    queue,
                    dropped = len - DLQ_KEEP as u64,
                    kept = DLQ_KEEP,
                    "dead letters past the kept number: the oldest are dropped"
                );
            }
            let _ = kv.list_trim(&key, 0, DLQ_KEEP - 1).await;
            Ok(moved)
        }
    }
}

/// [`settle`] for the job in hand, repeated until Redis answers, a stop
/// included: the job stays in the processing list meanwhile, so nothing is
/// lost, and giving up would have the next start take a job that ran for
/// one that was cut off and run it again. (A reload's next consumer of the
/// queue waits for this one; shutdown is bounded by its grace period.)
///
/// A job no longer in the list, on the first answer, was taken from this
/// replica's hands: Redis lost its data, or this replica looked dead to the
/// others and one of them put its jobs back. Where the job went next is
/// then not this replica's to say (a recoverer may have queued it again):
/// said loudly, since after a Redis restart the job is gone.
async fn settle_in_hand(kv: &Kv, (queue, list): (&str, &str), raw: &[u8], next: Next) {
    let mut pause = IDLE_POLL;
    let mut lost_answer = false;
    loop {
        match settle(kv, queue, list, raw, &next).await {
            Ok(true) => return,
            // After an answer that never came: most likely that one moved it.
            Ok(false) if lost_answer || matches!(next, Next::Done) => return,
            Ok(false) => {
                let job = serde_json::from_slice::<Job>(raw).map(|j| j.id);
                tracing::error!(
                    queue,
                    job = job.as_deref().unwrap_or("?"),
                    outcome = next.name(),
                    "a queue job was no longer in this replica's hands when it finished \
                     (Redis lost its data, or another replica took this one for dead); \
                     its outcome is not recorded"
                );
                return;
            }
            Err(e) => {
                tracing::warn!(queue, error = %e, "could not settle a queue job; retrying");
                lost_answer = true;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(SETTLE_RETRY_MAX);
            }
        }
    }
}

/// Puts back what processing list `list` holds: each entry moves to the
/// queue (or the dead letters) in one atomic step, so two recoverers take
/// each entry once and a crash meanwhile strands nothing. With `owner`, the
/// entries were cut off by that replica's death, and that run counts as an
/// attempt (it may be what killed the process); without, they never started.
/// Returns how many moved, and whether the list was seen empty at the end.
async fn recover_list(kv: &Kv, spec: &QueueSpec, list: &str, owner: Option<&str>) -> (usize, bool) {
    let mut moved = 0;
    loop {
        let raw = match kv.list_range(list, -1, -1).await {
            Ok(mut oldest) => match oldest.pop() {
                Some(raw) => raw,
                None => return (moved, true),
            },
            Err(_) => return (moved, false),
        };
        let next = match owner {
            None => Next::Queue(raw.clone()),
            Some(owner) => interrupted(spec, &raw, owner),
        };
        match settle(kv, &spec.name, list, &raw, &next).await {
            Ok(true) => moved += 1,
            Ok(false) => {} // another recoverer took it
            Err(_) => return (moved, false),
        }
    }
}

/// Where a job cut off by its replica's death goes: back on the queue with
/// that run counted, or to the dead letters when out of attempts (an entry
/// that is not a job goes there as it is).
fn interrupted(spec: &QueueSpec, raw: &[u8], owner: &str) -> Next {
    let Ok(mut job) = serde_json::from_slice::<Job>(raw) else {
        return Next::DeadLetters(raw.to_vec());
    };
    job.attempts = job.attempts.saturating_add(1);
    job.last_error = Some(format!("replica \"{owner}\" stopped while running it"));
    if job.attempts >= spec.max_attempts {
        Next::DeadLetters(job.dead_letter_entry())
    } else {
        Next::Queue(job.entry())
    }
}

/// Marks this consumer alive (first, so no one takes it for dead while it
/// registers) and (re-)registers its name. Run on every heartbeat: a replica
/// wrongly presumed dead (a long network partition) and forgotten comes back.
/// False when Redis did not take the liveness key.
async fn register(kv: &Kv, queue: &str, replica: &str) -> bool {
    let alive = kv
        .set(&alive_key(queue, replica), b"1", Some(PRESUMED_DEAD))
        .await
        .is_ok();
    let name = replica.as_bytes().to_vec();
    let _ = kv.list_remove(&consumers_key(queue), &name, 0).await;
    let _ = kv.list_push(&consumers_key(queue), &[name]).await;
    alive
}

/// Announces this consumer and takes back what an earlier run under the
/// same name left in flight; false when Redis broke the taking back off (the
/// consumer takes it up again). Consumers that died are the heartbeat's.
async fn announce(kv: &Kv, spec: &QueueSpec, replica: &str) -> bool {
    register(kv, &spec.name, replica).await;
    let own = processing_key(&spec.name, replica);
    let (moved, emptied) = recover_list(kv, spec, &own, Some(replica)).await;
    if moved > 0 {
        tracing::warn!(
            queue = %spec.name,
            moved,
            "took back jobs this replica left in flight before a restart"
        );
    }
    emptied
}

/// Consumers seen without a liveness key, and since when (this replica's
/// own look, on its own clock).
type Suspects = std::collections::HashMap<String, Instant>;

/// How long a consumer must stay without a liveness key, seen by two looks
/// of a replica whose own heartbeat went through, before it is presumed
/// dead. An outage longer than [`PRESUMED_DEAD`] expires every replica's key
/// at once: the first back must not take the others' running jobs (and run
/// them twice) before their next heartbeat re-registers them.
const SUSPECT_FOR: Duration = Duration::from_secs(3 * HEARTBEAT.as_secs());
/// The pause before registering again after Redis did not take the key.
const REGISTER_RETRY: Duration = Duration::from_secs(1);

/// Re-queues the in-flight jobs of consumers whose liveness key expired
/// (crashed or killed replicas), and forgets them once their processing
/// list is empty: a recovery that Redis broke off is taken up again on the
/// next heartbeat, not dropped with the name.
async fn recover_dead_consumers(kv: &Kv, spec: &QueueSpec, me: &str, suspects: &mut Suspects) {
    let queue = spec.name.as_str();
    let presumed_dead = |name: &str| {
        let key = alive_key(queue, name);
        async move { matches!(kv.get(&key).await, Ok(None)) }
    };
    let Ok(names) = kv.list_range(&consumers_key(queue), 0, -1).await else {
        return;
    };
    suspects.retain(|name, _| names.iter().any(|n| n == name.as_bytes()));
    for raw in names {
        let name = String::from_utf8_lossy(&raw).into_owned();
        if name == me || !presumed_dead(&name).await {
            suspects.remove(&name);
            continue;
        }
        let since = *suspects.entry(name.clone()).or_insert_with(Instant::now);
        if since.elapsed() < SUSPECT_FOR {
            continue;
        }
        let list = processing_key(queue, &name);
        let (moved, emptied) = recover_list(kv, spec, &list, Some(&name)).await;
        // Looked at again: it may have come back (a partition healed).
        if emptied && presumed_dead(&name).await {
            let _ = kv.list_remove(&consumers_key(queue), &raw, 0).await;
            suspects.remove(&name);
        }
        tracing::warn!(queue, replica = %name, moved, emptied, "re-queued the jobs of a consumer presumed dead");
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

/// Longest error kept with a job, in characters: it is read with the job
/// on every retry and replay.
const KEPT_ERROR_CHARS: usize = 2000;

/// A job's error as it is kept with the job (listed by the dead-letters
/// plugin, quoted in a replay's audit record, which is kept for good, and
/// in the schedule's run history):
/// redacted like a log line, since a plugin's error may quote a payload's
/// customer addresses or a URL's credentials, and cut short.
pub(crate) fn kept_error(error: &str) -> String {
    let mut kept = neo_ops_text::redact::redact_text(error, "****");
    if let Some((cut, _)) = kept.char_indices().nth(KEPT_ERROR_CHARS) {
        kept.truncate(cut);
        kept.push('…');
    }
    kept
}

/// An answer with an error status (`reply::json(503, …)` returned, not
/// raised) as the failure it reports: acknowledged as done, the job would
/// be gone with no retry and no dead letter, as the schedule and the
/// command line count it failed too.
fn answered_ok(out: Output) -> Result<Output, InvokeError> {
    if answered_success(out.status) {
        return Ok(out);
    }
    // Only its start: the error is kept with the job, cut short anyway.
    let start = &out.body[..out.body.len().min(KEPT_ERROR_CHARS * 4)];
    let body = String::from_utf8_lossy(start);
    let message = format!("the plugin answered status {}: {}", out.status, body.trim());
    Err(InvokeError::Failed {
        status: out.status,
        message,
    })
}

/// Whether the plugin refused the job itself, not a try at it: bad in
/// itself (400), or with what it is for gone (410).
fn bad_job(e: &InvokeError) -> bool {
    matches!(
        e,
        InvokeError::Failed {
            status: 400 | 410,
            ..
        }
    )
}

/// The delay before retry number `attempts` (1 after the first failure):
/// the queue's `backoff`, doubled per further attempt, at most 64 times it.
fn retry_delay(base: Duration, attempts: u32) -> Duration {
    base.saturating_mul(1 << attempts.saturating_sub(1).min(6))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// When a consumer next moves the retries come due back onto its queue:
/// once the soonest it knows of is due, and at least every
/// [`RELEASE_EVERY`] (another consumer may have set aside a sooner one).
struct Releases {
    next: Instant,
}

impl Releases {
    fn new() -> Self {
        Self {
            next: Instant::now(),
        }
    }

    fn due(&self) -> bool {
        Instant::now() >= self.next
    }

    /// After a look: again at once after a full batch (more may be due),
    /// else when the soonest left is due, or in [`RELEASE_EVERY`].
    fn looked(&mut self, released: Released) {
        let now = Instant::now();
        self.next = if released.moved >= u64::from(RELEASE_BATCH) {
            now
        } else {
            let soonest = released.next_due_ms.map_or(RELEASE_EVERY, until);
            now + soonest.min(RELEASE_EVERY)
        };
    }

    /// A retry this consumer set aside, due at `due_ms`.
    fn expect(&mut self, due_ms: i64) {
        self.next = self.next.min(Instant::now() + until(due_ms));
    }
}

/// How long until `ms` since the epoch (zero once past).
fn until(ms: i64) -> Duration {
    Duration::from_millis(ms.saturating_sub(now_ms()).max(0) as u64)
}

/// The name worker `worker` of this replica consumes a queue under: its
/// processing list and liveness key are its own, so to every replica it is
/// a consumer like any other. Worker 0 is the replica's own name.
pub fn worker_name(replica: &str, worker: u32) -> String {
    if worker == 0 {
        replica.to_string()
    } else {
        format!("{replica}#{worker}")
    }
}

/// Runs worker `worker` of one plugin's queue until `stop` is cancelled
/// (the queue's `concurrency` workers run side by side).
pub async fn consume(runtime: Arc<Runtime>, plugin: String, worker: u32, stop: CancellationToken) {
    let Some(spec) = runtime
        .plugin(&plugin)
        .and_then(|p| p.manifest.queue.clone())
    else {
        return;
    };
    let services = runtime.services.clone();
    let kv = &services.kv;
    let replica = worker_name(&services.settings.replica, worker);
    let (queue, processing) = (queue_key(&spec.name), processing_key(&spec.name, &replica));
    let lists = (spec.name.as_str(), processing.as_str());
    // What an earlier run left in flight, while Redis has not let it be
    // taken back.
    let mut left_over = !announce(kv, &spec, &replica).await;
    // The heartbeat runs beside the jobs: a long job must not look like a
    // dead replica. It has a token of its own, not a child of `stop`: a
    // reload stops the consumer while the job in hand still runs, and were
    // the heartbeat to stop then, another replica would take the job for a
    // dead one's and run it again. It ends with the consumer, a panic
    // included, so a consumer that is gone never looks alive.
    let heartbeat_stop = CancellationToken::new();
    let _heartbeat_guard = heartbeat_stop.clone().drop_guard();
    let heartbeat = tokio::spawn(keep_alive(
        services.clone(),
        spec.clone(),
        replica.clone(),
        heartbeat_stop.clone(),
    ));
    tracing::info!(plugin, queue = %spec.name, "queue consumer started");
    // The longest retry delay there is: a later time came from a clock
    // running ahead (this replica's or another's), and is held to this.
    let longest_delay = retry_delay(spec.backoff, u32::MAX).as_millis() as i64;
    let retrying = retrying_key(&spec.name);
    let mut releases = Releases::new();
    // A poll that failed may have moved a job whose reply was lost: the
    // consumer holds no job between polls, so what its list holds then
    // goes back on the queue.
    let mut strays = false;
    let mut failed_polls: u32 = 0;
    while !stop.is_cancelled() {
        if left_over {
            // Nothing new is claimed until then, so the list holds only
            // what the earlier run left (each charged an attempt), never a
            // stray of this run's (which never started).
            left_over = !recover_list(kv, &spec, &processing, Some(&replica)).await.1;
            if left_over {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(IDLE_POLL) => continue,
                }
            }
        }
        if strays {
            strays = !recover_list(kv, &spec, &processing, None).await.1;
        }
        if releases.due() {
            // An outage here is met by the poll below, which backs off.
            let released = kv
                .release_due(
                    &retrying,
                    &queue,
                    (now_ms(), now_ms().saturating_add(longest_delay)),
                    RELEASE_BATCH,
                )
                .await
                .unwrap_or(Released {
                    moved: 0,
                    next_due_ms: None,
                });
            releases.looked(released);
        }
        let claimed = match kv.list_move_oldest(&queue, &processing).await {
            Ok(c) => {
                if failed_polls > 0 {
                    tracing::info!(plugin, failed_polls, "queue poll works again");
                    failed_polls = 0;
                }
                c
            }
            Err(e) => {
                // Once per outage in the log, and polls backing off: Redis
                // refusing at once would otherwise mean ten warnings a
                // second per queue for as long as it lasts.
                if failed_polls == 0 {
                    tracing::warn!(plugin, error = %e, "queue poll failed; polling again with backoff");
                }
                failed_polls = failed_polls.saturating_add(1);
                strays = true;
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(outage_pause(failed_polls)) => continue,
                }
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
            settle_in_hand(kv, lists, &raw, Next::DeadLetters(raw.clone())).await;
            continue;
        };
        let now = now_ms();
        if let Some(due) = job.not_before_ms.filter(|t| *t > now) {
            // An older release's retry, queued to wait in the queue itself:
            // it waits in the retrying set instead, in one step with the
            // acknowledgement (at least once, never twice).
            let due = due.min(now.saturating_add(longest_delay));
            job.not_before_ms = None;
            settle_in_hand(kv, lists, &raw, Next::Retry(job.entry(), due)).await;
            releases.expect(due);
            continue;
        }
        job.attempts = job.attempts.saturating_add(1);
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
        let result = runtime.invoke(&plugin, inv).await.and_then(answered_ok);
        let next = match result {
            Err(InvokeError::Busy(_)) => {
                // The job never started: back on the queue with its attempts
                // as they were, after a short pause so a saturated replica
                // does not spin.
                job.attempts -= 1;
                let due = now_ms() + BUSY_RETRY.as_millis() as i64;
                settle_in_hand(kv, lists, &raw, Next::Retry(job.entry(), due)).await;
                releases.expect(due);
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(BUSY_RETRY) => {}
                }
                continue;
            }
            Ok(_) => {
                tracing::info!(plugin, job = %job.id, attempts = job.attempts, "queue job done");
                Next::Done
            }
            // Out of attempts, or refused by the plugin as bad in itself
            // (400: a payload it cannot read, an export too large to mail)
            // or as gone (410: a webhook endpoint deleted), which no retry
            // would change.
            Err(e) if job.attempts >= spec.max_attempts || bad_job(&e) => {
                // A string field: quoted and escaped, guest text and all.
                let error = e.to_string();
                tracing::error!(plugin, job = %job.id, attempts = job.attempts, error = error.as_str(), "queue job dead-lettered");
                job.last_error = Some(kept_error(&error));
                Next::DeadLetters(job.dead_letter_entry())
            }
            Err(e) => {
                let delay = retry_delay(spec.backoff, job.attempts);
                let error = e.to_string();
                tracing::warn!(plugin, job = %job.id, attempts = job.attempts, ?delay, error = error.as_str(), "queue job failed; will retry");
                job.last_error = Some(kept_error(&error));
                // The retry waits in the retrying set, not here: other jobs
                // keep flowing, and no consumer polls it meanwhile.
                let due = now_ms() + delay.as_millis() as i64;
                releases.expect(due);
                Next::Retry(job.entry(), due)
            }
        };
        settle_in_hand(kv, lists, &raw, next).await;
    }
    if strays {
        recover_list(kv, &spec, &processing, None).await;
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
    let mut suspects = Suspects::new();
    loop {
        // Only a replica whose own key Redis took looks at the others, so
        // the suspicion runs on the time Redis has been there for both.
        // A failed registration is tried again soon: after an outage this
        // replica's key is back long before another presumes it dead.
        let pause = if register(kv, &spec.name, &replica).await {
            recover_dead_consumers(kv, &spec, &replica, &mut suspects).await;
            HEARTBEAT
        } else {
            suspects.clear();
            REGISTER_RETRY
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_error_is_redacted_and_cut_short() {
        assert_eq!(
            kept_error("bad export email \"ann@a.example\": expected one address"),
            "bad export email \"****@a.example\": expected one address"
        );
        let long = kept_error(&"é".repeat(5000));
        assert_eq!(long.chars().count(), KEPT_ERROR_CHARS + 1);
        assert!(long.ends_with("é…"));
    }
}
