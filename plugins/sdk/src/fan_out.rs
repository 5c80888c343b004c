//! A scheduled run's work split into one queue job per tenant, on the
//! plugin's own queue: each job has the plugin's whole timeout, one slow
//! tenant holds up no other, and a failed one is retried by the queue alone.

use crate::tenants::Tenant;
use crate::{Error, ErrorCode, Output, queue, reply};

/// Queues `payload` for every tenant on `queue`. `denied` before the first
/// is queued means the plugin has no grant for the queue: the caller then
/// does the work in its own run. A tenant whose job could not be queued
/// fails the run (the schedule records it) after the rest are queued.
pub fn enqueue_each(queue: &str, tenants: &[Tenant], payload: &str) -> Result<Output, Error> {
    let mut failed = Vec::new();
    for (i, t) in tenants.iter().enumerate() {
        match queue::enqueue_for_tenant(queue, &t.name, payload) {
            Ok(_) => {}
            Err(e) if i == 0 && e.code == ErrorCode::Denied => return Err(e),
            Err(e) => failed.push(format!("{}: {}", t.name, e.message)),
        }
    }
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
