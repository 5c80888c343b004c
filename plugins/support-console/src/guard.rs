//! Double-click protection: a kv lock (SET NX with a TTL) per action and
//! target. With an `Idempotency-Key` the lock is per key and lives long;
//! without one, the same action on the same target within a short window is
//! a double click. A call whose work fails releases its lock so a retry runs;
//! one whose work succeeded marks it done for as long as the guard lasts
//! (resend_invoice as soon as the mail has gone, the others once all their
//! work is done), and the mark is looked at around taking the lock, so a
//! repeat is told "done" even if the lock was released meanwhile (the host
//! releases the locks of a call cut off by its timeout). A repeat while the
//! lock is held and not marked is told the work is still running. What no
//! mark covers: a call cut off before it could mark (mid-mail, or between
//! another action's commit and its mark) can be retried into a second run.
//! A call with a key also holds the target's double-click lock while it
//! runs, so one with another key (a reload of the console during a slow
//! send) is told the action is running rather than doing it a second time.

use neo_ops_sdk::{Failure, config, kv};
use std::time::Duration;

const DEFAULT_WINDOW: Duration = Duration::from_secs(30);
const DEFAULT_KEY_TTL: Duration = Duration::from_secs(24 * 3600);

/// A lock this call holds.
pub struct Held {
    name: String,
    token: String,
    ttl_ms: u64,
    /// With a key, the target's double-click lock too (its name and token),
    /// held while the call runs: a call with another key (the console
    /// makes one per search) cannot run the same action on the same target
    /// at the same time, as a reload during a slow send would.
    running: Option<(String, String)>,
}

/// What taking the guard found.
pub enum Guard {
    /// This call does the work.
    Held(Held),
    /// An earlier call did it.
    Done,
    /// An earlier call holds the guard and has not said it succeeded: it is
    /// still running (or its outcome was never recorded).
    Running,
}

impl Held {
    /// Lets a retry through: the work failed before it took effect.
    pub fn release(self) {
        unlock(&self.name, &self.token);
        self.finish();
    }

    /// The call is over: a call with another key may now run the action
    /// on this target (this one's own lock stays, as the guard).
    pub fn finish(self) {
        if let Some((name, token)) = &self.running {
            unlock(name, token);
        }
    }

    /// Marks the work done, for as long as the guard lasts (a little longer:
    /// from now, not from when it was taken): a repeat is then told it was
    /// done, not that it is still running, and does not run it again.
    pub fn done(&self) {
        if let Err(e) = kv::set(&done_key(&self.name), b"1", Some(self.ttl_ms)) {
            neo_ops_sdk::warn(&format!(
                "marking \"{}\" done failed: {}; a repeat is told it is still running while the guard holds",
                self.name, e.message
            ));
        }
    }
}

fn unlock(name: &str, token: &str) {
    if let Err(e) = kv::unlock(name, token) {
        neo_ops_sdk::warn(&format!("releasing \"{name}\" failed: {}", e.message));
    }
}

fn done_key(lock: &str) -> String {
    format!("console:done:{lock}")
}

/// The lock's name for this action on this target, and how long it lasts.
fn lock_of(
    tenant: &str,
    action: &str,
    target: &str,
    key: Option<&str>,
) -> Result<(String, Duration), Failure> {
    Ok(match key {
        Some(key) => (
            format!("console:idem:{tenant}:{action}:{target}:{key}"),
            config::duration("idempotency_ttl", DEFAULT_KEY_TTL)?,
        ),
        None => (
            format!("console:click:{tenant}:{action}:{target}"),
            config::duration("double_click", DEFAULT_WINDOW)?,
        ),
    })
}

/// Whether an earlier call did this action on this target (with this key,
/// or within the double-click window), looked at before anything else: a
/// repeat is told so even if the target has changed since (an order's
/// customer anonymised after its invoice went).
pub fn already_done(
    tenant: &str,
    action: &str,
    target: &str,
    key: Option<&str>,
) -> Result<bool, Failure> {
    let (name, _) = lock_of(tenant, action, target, key)?;
    Ok(kv::get(&done_key(&name))?.is_some())
}

/// What a keyed call found of the target's double-click lock.
enum Running {
    Taken((String, String)),
    Finished,
    Busy,
}

/// Takes the target's double-click lock for a call with a key, for as long
/// as the double-click window (a call cut off leaves it to expire then).
fn running_lock(tenant: &str, action: &str, target: &str) -> Result<Running, Failure> {
    let (name, window) = lock_of(tenant, action, target, None)?;
    let ttl_ms = window.as_millis().max(1) as u64;
    if let Some(token) = kv::lock(&name, ttl_ms)? {
        return Ok(Running::Taken((name, token)));
    }
    Ok(if kv::get(&done_key(&name))?.is_some() {
        Running::Finished
    } else {
        Running::Busy
    })
}

/// Takes the guard for this action on this target; the caller has asked
/// `already_done` first.
pub fn acquire(
    tenant: &str,
    action: &str,
    target: &str,
    key: Option<&str>,
) -> Result<Guard, Failure> {
    let (name, ttl) = lock_of(tenant, action, target, key)?;
    let ttl_ms = ttl.as_millis().max(1) as u64;
    let marker = done_key(&name);
    let done = || -> Result<bool, Failure> { Ok(kv::get(&marker)?.is_some()) };
    // The caller has looked at the done mark already (`already_done`); the
    // looks below cover a mark made since.
    if let Some(token) = kv::lock(&name, ttl_ms)? {
        let mut held = Held {
            name,
            token,
            ttl_ms,
            running: None,
        };
        // A kv failure from here on gives the lock back: kept, it would
        // tell every retry with this key "running" until it expired.
        let given_back = |held: Held, e: Failure| {
            held.release();
            Err(e)
        };
        // Marked since the caller's look by a call that took effect and was
        // then cut off (which released its lock): done.
        match done() {
            Ok(true) => {
                held.release();
                return Ok(Guard::Done);
            }
            Ok(false) => {}
            Err(e) => return given_back(held, e),
        }
        if key.is_some() {
            let running = match running_lock(tenant, action, target) {
                Ok(running) => running,
                Err(e) => return given_back(held, e),
            };
            match running {
                Running::Taken(lock) => held.running = Some(lock),
                // A call without a key finished within its window (its
                // lock stays as the double-click guard): not running.
                Running::Finished => {}
                Running::Busy => {
                    held.release();
                    return Ok(Guard::Running);
                }
            }
        }
        return Ok(Guard::Held(held));
    }
    // Marked done since the caller's look, or still running.
    Ok(if done()? { Guard::Done } else { Guard::Running })
}
