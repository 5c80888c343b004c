//! Admission control: who may take one of the pool's instance slots.
//!
//! Every invocation holds a slot from instantiation until its database work
//! has settled. Callers are sorted into classes; the public class (routes
//! without a role) and the background class (schedules, queue jobs) may each
//! hold only their share of the slots, so a flood on a public route can never
//! take the slots operators, schedules and queue jobs need, and a queue
//! backlog can never lock operators out. An invocation that finds no slot
//! waits a bounded time, then is refused as busy (503 + `Retry-After`, a
//! clear CLI error, a queue job re-queued without charging an attempt).
//! Refusals are counted and logged as one summary line per interval.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

pub use crate::settings::AdmissionPolicy;

/// How long refusals are summed before one log line reports them.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Who is asking for a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// An HTTP route anyone may call.
    Public,
    /// An authenticated route, a CLI command, the preflight checklist.
    Operator,
    /// A schedule slot or a queue job.
    Background,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Public => "public",
            Class::Operator => "operator",
            Class::Background => "background",
        }
    }
}

/// A held slot; dropping it frees the slot.
pub struct Slot {
    _class: Option<OwnedSemaphorePermit>,
    _total: OwnedSemaphorePermit,
}

/// Counts a waiter for as long as it lives.
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(counter: &'a std::sync::atomic::AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("no free plugin slot within {wait:?} ({class} invocations)", class = class.as_str())]
pub struct Busy {
    pub class: Class,
    pub wait: Duration,
}

pub struct Admission {
    total: Arc<Semaphore>,
    public: Arc<Semaphore>,
    background: Arc<Semaphore>,
    slots: u32,
    wait: Duration,
    refused: [AtomicU64; 3],
    refused_total: AtomicU64,
    waiting: std::sync::atomic::AtomicUsize,
}

impl Admission {
    pub fn new(slots: u32, policy: AdmissionPolicy) -> Self {
        let slots = slots.max(1);
        let share = |percent: u32| ((slots as u64 * percent as u64 / 100) as usize).max(1);
        // Each share is at least one slot; from three slots on, one is
        // always left out of the two shares whatever the rounding, so an
        // operator gets in past a public flood and a job backlog at once
        // (the public share leaves room for both, then the background one
        // for the operator).
        let all = slots as usize;
        let public = match all >= 3 {
            true => share(policy.public_share).min(all - 2),
            false => share(policy.public_share),
        };
        let background = share(policy.background_share)
            .min(all.saturating_sub(public + 1))
            .max(1);
        Self {
            total: Arc::new(Semaphore::new(slots as usize)),
            public: Arc::new(Semaphore::new(public)),
            background: Arc::new(Semaphore::new(background)),
            slots,
            wait: policy.wait,
            refused: Default::default(),
            refused_total: AtomicU64::new(0),
            waiting: Default::default(),
        }
    }

    /// Waits at most the policy's bound for a slot of `class`.
    pub async fn acquire(&self, class: Class) -> Result<Slot, Busy> {
        let class_sem = match class {
            Class::Public => Some(&self.public),
            Class::Background => Some(&self.background),
            Class::Operator => None,
        };
        let take = async {
            let class_permit = match class_sem {
                Some(s) => Some(s.clone().acquire_owned().await.ok()?),
                None => None,
            };
            let total = self.total.clone().acquire_owned().await.ok()?;
            Some(Slot {
                _class: class_permit,
                _total: total,
            })
        };
        let taken = {
            // Counted while waiting, also when the caller goes away meanwhile.
            let _waiting = Waiting::enter(&self.waiting);
            tokio::time::timeout(self.wait, take).await
        };
        match taken {
            Ok(Some(slot)) => Ok(slot),
            _ => {
                self.refused[class as usize].fetch_add(1, Ordering::Relaxed);
                self.refused_total.fetch_add(1, Ordering::Relaxed);
                Err(Busy {
                    class,
                    wait: self.wait,
                })
            }
        }
    }

    /// Slots held right now.
    pub fn in_use(&self) -> u32 {
        self.slots - self.total.available_permits() as u32
    }

    /// Invocations waiting for a slot right now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// Refusals since start, all classes.
    pub fn refused(&self) -> u64 {
        self.refused_total.load(Ordering::Relaxed)
    }

    /// Logs one line per interval in which invocations were refused, until
    /// `stop`. Counted from when it starts: a reload starts another on the
    /// same counters, which must not report every refusal since start.
    pub async fn log_refusals(self: Arc<Self>, stop: CancellationToken) {
        let mut last: [u64; 3] = std::array::from_fn(|i| self.refused[i].load(Ordering::Relaxed));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(REFUSAL_LOG_INTERVAL) => {}
            }
            let now: [u64; 3] = std::array::from_fn(|i| self.refused[i].load(Ordering::Relaxed));
            let delta: [u64; 3] = std::array::from_fn(|i| now[i] - last[i]);
            last = now;
            if delta.iter().any(|&d| d > 0) {
                tracing::warn!(
                    public = delta[Class::Public as usize],
                    operator = delta[Class::Operator as usize],
                    background = delta[Class::Background as usize],
                    slots = self.slots,
                    interval_s = REFUSAL_LOG_INTERVAL.as_secs(),
                    "invocations refused: no free plugin slot"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(wait_ms: u64) -> AdmissionPolicy {
        AdmissionPolicy {
            public_share: 50,
            background_share: 40,
            wait: Duration::from_millis(wait_ms),
        }
    }

    #[tokio::test]
    async fn public_callers_never_take_the_operators_share() {
        let a = Admission::new(4, policy(20));
        let held: Vec<Slot> = vec![
            a.acquire(Class::Public).await.unwrap(),
            a.acquire(Class::Public).await.unwrap(),
        ];
        // The public share (2 of 4) is used up: a third public caller waits, then is refused.
        let busy = a.acquire(Class::Public).await.err().unwrap();
        assert_eq!(busy.class, Class::Public);
        // Operators still get the other two slots.
        let op1 = a.acquire(Class::Operator).await.unwrap();
        let op2 = a.acquire(Class::Operator).await.unwrap();
        assert_eq!(a.in_use(), 4);
        assert!(a.acquire(Class::Operator).await.is_err());
        assert_eq!(a.refused(), 2);
        drop((op1, op2, held));
        assert_eq!(a.in_use(), 0);
    }

    #[tokio::test]
    async fn rounding_never_hands_every_slot_to_the_shares() {
        // 1 % and 98 % of 50 would round to 1 + 49: all of them.
        let lopsided = AdmissionPolicy {
            public_share: 1,
            background_share: 98,
            wait: Duration::from_millis(20),
        };
        // 75 % and 20 % of 4 would round to 3 + 1; 90 % and 9 % of 10 to 9 + 1.
        let public_heavy = |public_share, background_share| AdmissionPolicy {
            public_share,
            background_share,
            wait: Duration::from_millis(20),
        };
        for (slots, policy) in [
            (50, lopsided),
            (3, policy(20)),
            (4, public_heavy(75, 20)),
            (10, public_heavy(90, 9)),
        ] {
            let a = Admission::new(slots, policy);
            let mut held = Vec::new();
            while let Ok(s) = a.acquire(Class::Public).await {
                held.push(s);
            }
            while let Ok(s) = a.acquire(Class::Background).await {
                held.push(s);
            }
            assert!(a.acquire(Class::Operator).await.is_ok(), "{slots} slots");
        }
    }

    #[tokio::test]
    async fn a_public_flood_and_a_queue_backlog_leave_operators_slots() {
        let a = Admission::new(10, policy(20));
        let mut held = Vec::new();
        while let Ok(s) = a.acquire(Class::Public).await {
            held.push(s);
        }
        while let Ok(s) = a.acquire(Class::Background).await {
            held.push(s);
        }
        assert_eq!(held.len(), 9, "5 public + 4 background");
        assert!(a.acquire(Class::Operator).await.is_ok());
    }

    #[tokio::test]
    async fn a_waiting_caller_gets_a_slot_freed_within_the_bound() {
        let a = Arc::new(Admission::new(1, policy(2_000)));
        let slot = a.acquire(Class::Operator).await.unwrap();
        let waiter = tokio::spawn({
            let a = a.clone();
            async move { a.acquire(Class::Operator).await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(slot);
        assert!(waiter.await.unwrap());
    }
}
