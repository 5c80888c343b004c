//! A scheduled run's work split into one queue job per tenant, on the
//! plugin's own queue: each job has the plugin's whole timeout, one slow
//! tenant holds up no other, and a failed one is retried by the queue alone.

use crate::tenants::Tenant;
use crate::{Error, ErrorCode, Output, queue, reply};

/// Pauses before each new try at what a blip left out, in milliseconds:
/// about two minutes in all, time for Redis to fail over (Sentinel takes
/// 30 s to call a primary down by default) or the master to restart. A
/// slot is claimed once: a tenant not queued in its run has no job that
/// day. A pause ends early when the invocation's time runs short.
const RETRY_PAUSES_MS: [u32; 8] = [1_000, 2_000, 4_000, 8_000, 15_000, 30_000, 30_000, 30_000];

/// `attempt` until it succeeds or fails other than as unavailable, tried
/// again after each pause of [`RETRY_PAUSES_MS`]: what a scheduled run reads
/// before it fans out (the tenants), so a master out for a moment at the
/// slot does not cost the slot's work.
pub fn until_available<T>(mut attempt: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
    let mut result = attempt();
    for pause in RETRY_PAUSES_MS {
        if !matches!(&result, Err(e) if e.code == ErrorCode::Unavailable) {
            break;
        }
        crate::time::pause(pause);
        result = attempt();
    }
    result
}

/// Queues `payload` for every tenant on `queue`. `denied` before the first
/// is queued means the plugin has no grant for the queue: the caller then
/// does the work in its own run. A tenant whose job could not be queued
/// because a backend was unavailable is tried again after each pause of
/// [`RETRY_PAUSES_MS`] (a job queued twice when an answer was lost is
/// harmless: each job is done once per tenant and day); one still not
/// queued fails the run (the schedule records it) after the rest are.
pub fn enqueue_each(queue: &str, tenants: &[Tenant], payload: &str) -> Result<Output, Error> {
    let mut left: Vec<(&Tenant, Error)> = Vec::new();
    for (i, t) in tenants.iter().enumerate() {
        match queue::enqueue_for_tenant(queue, &t.name, payload) {
            Ok(_) => {}
            Err(e) if i == 0 && e.code == ErrorCode::Denied => return Err(e),
            Err(e) => left.push((t, e)),
        }
    }
    for pause in RETRY_PAUSES_MS {
        if !left.iter().any(|(_, e)| e.code == ErrorCode::Unavailable) {
            break;
        }
        crate::time::pause(pause);
        left = left
            .into_iter()
            .filter_map(|(t, e)| {
                if e.code != ErrorCode::Unavailable {
                    return Some((t, e));
                }
                queue::enqueue_for_tenant(queue, &t.name, payload)
                    .err()
                    .map(|e| (t, e))
            })
            .collect();
    }
    let failed: Vec<String> = left
        .iter()
        .map(|(t, e)| format!("{}: {}", t.name, e.message))
        .collect();
    let queued = tenants.len() - failed.len();
    if failed.is_empty() {
        return Ok(reply::text(
            200,
            format!("queued {queued} jobs on \"{queue}\", one per tenant\n"),
        ));
    }
    Err(Error {
        code: ErrorCode::Unavailable,
        message: format!(
            "queued {queued} of {} jobs on \"{queue}\"; not queued: {}",
            tenants.len(),
            failed.join("; ")
        ),
    })
}

/// Whether [`enqueue_each`] found no grant for the queue (nothing queued).
pub fn no_queue(e: &Error) -> bool {
    e.code == ErrorCode::Denied
}
