//! Schedule trigger: cron expressions in a time zone. Each slot fires once
//! across all replicas: the replica that inserts the slot's row into `runs`
//! (unique on plugin, trigger, slot) runs it; the others skip it.

use chrono::{DateTime, SecondsFormat, Utc};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use crate::backends::db::Value;
use crate::manifest::Manifest;
use crate::runtime::{Invocation, InvokeError, Runtime, Trigger, answered_success};

/// How long a slot that found every plugin slot taken keeps asking before
/// its run is recorded as failed.
const BUSY_WAIT: Duration = Duration::from_secs(600);
/// The pause between two such asks.
const BUSY_PAUSE: Duration = Duration::from_millis(250);

/// First and longest pause between claims of a slot the database could not
/// answer.
const CLAIM_PAUSE: Duration = Duration::from_millis(500);
const CLAIM_PAUSE_MAX: Duration = Duration::from_secs(15);

/// A due slot: which plugin's which schedule fires at which instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueSlot {
    pub plugin: String,
    pub schedule: usize,
    pub at: DateTime<Utc>,
}

/// Every slot in `(from, to]` across the manifest, in time order. The clock
/// is the caller's, so tests can ask "what fires at 14:30 UTC" without waiting.
pub fn due_between(manifest: &Manifest, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DueSlot> {
    let mut out = Vec::new();
    for p in &manifest.plugins {
        for (i, s) in p.schedules.iter().enumerate() {
            let mut t = from;
            while let Some(next) = s.cron.next_after(s.tz, t) {
                if next > to {
                    break;
                }
                out.push(DueSlot {
                    plugin: p.name.clone(),
                    schedule: i,
                    at: next,
                });
                t = next;
            }
        }
    }
    out.sort_by(|a, b| a.at.cmp(&b.at).then(a.plugin.cmp(&b.plugin)));
    out
}

fn slot_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Claims a slot for this replica; the run's id if this replica should
/// run it. The run's times are the host's clock, as its finish is, so a
/// duration read from the history is not skewed by the database's.
///
/// A slot whose run was cut off (`interrupted`: its process stopped or
/// died mid-run) is claimed again, so the next start's catch-up runs it:
/// a run is at least once, as a queue job is. The digest and the purge
/// do their work once whatever runs them twice (`digest_sends`, committed
/// batches); a monthly test alert cut off is sent again.
async fn claim_slot(
    runtime: &Runtime,
    plugin: &str,
    schedule: usize,
    at: DateTime<Utc>,
) -> anyhow::Result<Option<i64>> {
    let now = Utc::now();
    let fresh = slot_run(
        runtime,
        "INSERT INTO runs (plugin, trigger, slot, replica, status, started_at) \
         VALUES ($1, $2, $3, $4, 'running', $5) \
         ON CONFLICT (plugin, trigger, slot) WHERE slot IS NOT NULL DO NOTHING RETURNING id",
        plugin,
        schedule,
        at,
        now,
    )
    .await?;
    if fresh.is_some() {
        return Ok(fresh);
    }
    let again = slot_run(
        runtime,
        "UPDATE runs SET replica = $4, status = 'running', started_at = $5, \
         finished_at = NULL, error = NULL \
         WHERE plugin = $1 AND trigger = $2 AND slot = $3 AND status = 'interrupted' \
         RETURNING id",
        plugin,
        schedule,
        at,
        now,
    )
    .await?;
    if let Some(run_id) = again {
        tracing::warn!(plugin, slot = %slot_text(at), run_id, "the slot's run was interrupted; it runs again");
    }
    Ok(again)
}

/// The id `sql` returns for the slot's (plugin, trigger, slot, replica)
/// and, as `$5`, `time`.
async fn slot_run(
    runtime: &Runtime,
    sql: &str,
    plugin: &str,
    schedule: usize,
    at: DateTime<Utc>,
    time: DateTime<Utc>,
) -> anyhow::Result<Option<i64>> {
    let services = &runtime.services;
    let params = [
        Value::Text(plugin.into()),
        Value::Text(format!("schedule:{schedule}")),
        Value::Text(slot_text(at)),
        Value::Text(services.settings.replica.clone()),
        Value::Timestamp(time.timestamp_micros()),
    ];
    let rows = services.db.master().query(sql, &params).await?;
    Ok(match rows.rows.first().and_then(|r| r.first()) {
        Some(Value::Int(id)) => Some(*id),
        _ => None,
    })
}

/// The slot's run if this replica claimed it since `since` (this claim's
/// first try) and nothing has finished it: not a row a previous life of
/// the same replica name left running when it died.
async fn own_claim(
    runtime: &Runtime,
    plugin: &str,
    schedule: usize,
    at: DateTime<Utc>,
    since: DateTime<Utc>,
) -> anyhow::Result<Option<i64>> {
    slot_run(
        runtime,
        "SELECT id FROM runs WHERE plugin = $1 AND trigger = $2 AND slot = $3 \
         AND replica = $4 AND status = 'running' AND started_at >= $5",
        plugin,
        schedule,
        at,
        since,
    )
    .await
}

/// How long a run's result is asked to be recorded while the database
/// cannot take it (a failover), before it is given up on.
const RECORD_WITHIN: Duration = Duration::from_secs(120);

/// Records how a run ended, asking again while the database cannot answer:
/// a run that succeeded during a failover must not stay `running` (and be
/// marked interrupted as the process leaves). A shutdown's drain waits for
/// this within its grace period. `started` is when the invocation that ran
/// was asked for, after the schedule's waits for a plugin slot (within the
/// admission's own short wait), so the history's duration is the run's.
/// Only while the claim is still this replica's: a run marked interrupted
/// under it (a replica cut off from Redis looks departed) and claimed again
/// by another is that one's to record.
async fn finish_run(runtime: &Runtime, run_id: i64, started: DateTime<Utc>, error: Option<String>) {
    let status = if error.is_some() { "error" } else { "ok" };
    let finished_at = Utc::now().timestamp_micros();
    let error = error.map(Value::Text).unwrap_or(Value::Null);
    let give_up = Instant::now() + RECORD_WITHIN;
    let mut pause = CLAIM_PAUSE;
    loop {
        let result = runtime
            .services
            .db
            .master()
            .execute(
                "UPDATE runs SET status = $1, error = $2, finished_at = $3, started_at = $4 \
                 WHERE id = $5 AND replica = $6",
                &[
                    Value::Text(status.into()),
                    error.clone(),
                    Value::Timestamp(finished_at),
                    Value::Timestamp(started.timestamp_micros()),
                    Value::Int(run_id),
                    Value::Text(runtime.services.settings.replica.clone()),
                ],
            )
            .await;
        match result {
            Ok(0) => {
                tracing::warn!(
                    run_id,
                    status,
                    "the run's claim was taken over by another replica; its result is not recorded"
                );
                return;
            }
            Ok(_) => return,
            Err(e) if Instant::now() + pause < give_up => {
                tracing::warn!(run_id, error = %e, retry_in = ?pause, "cannot record the run's result yet");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(CLAIM_PAUSE_MAX);
            }
            Err(e) => {
                tracing::error!(run_id, error = %e, "could not record the run's result; giving up");
                return;
            }
        }
    }
}

/// Fires one slot if this replica wins it. A slot that finds every plugin
/// slot taken waits for one (up to [`BUSY_WAIT`]) rather than being used
/// up, through a reload too (the set that takes over fires only slots due
/// after it was installed; a shutdown marks the run interrupted).
pub async fn fire(runtime: &Runtime, plugin: &str, schedule: usize, at: DateTime<Utc>) {
    let Some(spec) = runtime
        .plugin(plugin)
        .and_then(|p| p.manifest.schedules.get(schedule).cloned())
    else {
        return;
    };
    if runtime.services.stopping.is_cancelled() {
        // Not claimed: the next start's catch-up runs it.
        tracing::warn!(plugin, slot = %slot_text(at), "shutting down: the slot is left for the next start");
        return;
    }
    let Some(_firing) = Firing::enter(&runtime.services, plugin, schedule, at) else {
        return; // the other plugin set of a reload has it
    };
    let Some(run_id) = claim_until_answered(runtime, plugin, schedule, at).await else {
        return;
    };
    let lag = (Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0;
    runtime
        .services
        .metrics
        .schedule_lag
        .get_or_create(&crate::metrics::PluginLabels {
            plugin: plugin.to_string(),
        })
        .set(lag);
    let invocation = || Invocation {
        trigger: Trigger::Schedule {
            cron: spec.cron.as_str().to_string(),
            time_zone: spec.tz.name().to_string(),
            slot_micros: at.timestamp_micros(),
            args: spec.args.clone(),
        },
        tenant: None,
        principal: None,
        dry_run: false,
        request_id: super::new_request_id(),
    };
    tracing::info!(plugin, slot = %slot_text(at), "schedule fired");
    let give_up = Instant::now() + BUSY_WAIT;
    let mut waiting = false;
    let mut started;
    let result = loop {
        started = Utc::now();
        match runtime.invoke(plugin, invocation()).await {
            Err(InvokeError::Busy(_)) if Instant::now() < give_up => {
                if !waiting {
                    tracing::warn!(plugin, slot = %slot_text(at), "every plugin slot is taken; the schedule waits for one");
                    waiting = true;
                }
                if !pause_unless_stopping(runtime, BUSY_PAUSE).await {
                    // Not started during the drain: the claim is given
                    // back, so the next start's catch-up runs the slot.
                    // With catch-up off nothing would run it: the row
                    // stays, marked interrupted as the process leaves.
                    if !runtime.services.settings.schedule_catch_up.is_zero() {
                        tracing::warn!(plugin, slot = %slot_text(at), "shutting down: the schedule stops waiting for a slot and leaves it for the next start");
                        unclaim(runtime, run_id).await;
                    }
                    return;
                }
            }
            result => break result,
        }
    };
    // An answer with an error status (emit-test-alert's `--json` report of
    // a failed channel) is a failed run too.
    let error = match result {
        Ok(out) if !answered_success(out.status) => {
            Some(format!("the plugin answered status {}", out.status))
        }
        Ok(_) => None,
        // Kept 30 days in `runs`: masked and cut short as a job's error is.
        Err(e) => Some(super::queue::kept_error(&e.to_string())),
    };
    finish_run(runtime, run_id, started, error).await;
}

/// A slot this process is firing, taken off [`Services::firing`] when
/// dropped.
///
/// [`Services::firing`]: crate::services::Services::firing
struct Firing<'a> {
    services: &'a crate::services::Services,
    key: (String, usize, i64),
}

impl<'a> Firing<'a> {
    /// `None` when this process is already firing the slot.
    fn enter(
        services: &'a crate::services::Services,
        plugin: &str,
        schedule: usize,
        at: DateTime<Utc>,
    ) -> Option<Self> {
        let key = (plugin.to_string(), schedule, at.timestamp_micros());
        let mut firing = services.firing.lock().unwrap_or_else(|p| p.into_inner());
        // Built only when entered: a `Firing` dropped here would lock again.
        firing.insert(key.clone()).then(|| Self { services, key })
    }
}

impl Drop for Firing<'_> {
    fn drop(&mut self) {
        let mut firing = self
            .services
            .firing
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        firing.remove(&self.key);
    }
}

/// Gives back the claim of a slot that never started, while it is this
/// replica's (the run is marked interrupted as the process leaves if this
/// fails).
async fn unclaim(runtime: &Runtime, run_id: i64) {
    let result = runtime
        .services
        .db
        .master()
        .execute(
            "DELETE FROM runs WHERE id = $1 AND status = 'running' AND replica = $2",
            &[
                Value::Int(run_id),
                Value::Text(runtime.services.settings.replica.clone()),
            ],
        )
        .await;
    if let Err(e) = result {
        tracing::warn!(run_id, error = %e, "could not give back the slot's claim");
    }
}

/// Sleeps `pause`; false, at once, when the process begins to shut down
/// (a reload does not stop a slot's wait: the set taking over does not
/// fire a slot already due).
async fn pause_unless_stopping(runtime: &Runtime, pause: Duration) -> bool {
    tokio::select! {
        biased;
        _ = runtime.services.stopping.cancelled() => false,
        _ = tokio::time::sleep(pause) => true,
    }
}

/// Claims the slot, asking again while the database cannot answer (a blip
/// at 20:00 would otherwise lose that day's digest on every replica), for
/// as long as a busy slot waits. `None`: another replica has it, or the
/// database stayed away.
async fn claim_until_answered(
    runtime: &Runtime,
    plugin: &str,
    schedule: usize,
    at: DateTime<Utc>,
) -> Option<i64> {
    let give_up = Instant::now() + BUSY_WAIT;
    let first_try = Utc::now();
    let mut pause = CLAIM_PAUSE;
    let mut failed_before = false;
    loop {
        match claim_slot(runtime, plugin, schedule, at).await {
            Ok(Some(id)) => return Some(id),
            // A claim whose answer was lost may have been ours: asked again
            // while the database cannot answer, or nobody runs the slot.
            Ok(None) if failed_before => loop {
                match own_claim(runtime, plugin, schedule, at, first_try).await {
                    Ok(found) => return found,
                    Err(e) if Instant::now() + pause < give_up => {
                        tracing::warn!(plugin, slot = %slot_text(at), error = %e, retry_in = ?pause, "cannot tell whose the schedule slot is yet");
                        if !pause_unless_stopping(runtime, pause).await {
                            return None;
                        }
                        pause = (pause * 2).min(CLAIM_PAUSE_MAX);
                    }
                    Err(e) => {
                        tracing::error!(plugin, slot = %slot_text(at), error = %e, "cannot tell whose the schedule slot is; leaving it");
                        return None;
                    }
                }
            },
            Ok(None) => {
                tracing::debug!(plugin, slot = %slot_text(at), "slot already run or running (here or on another replica)");
                return None;
            }
            Err(e) if Instant::now() + pause < give_up => {
                failed_before = true;
                tracing::warn!(plugin, slot = %slot_text(at), error = %e, retry_in = ?pause, "cannot claim schedule slot yet");
                if !pause_unless_stopping(runtime, pause).await {
                    return None;
                }
                pause = (pause * 2).min(CLAIM_PAUSE_MAX);
            }
            Err(e) => {
                tracing::error!(plugin, slot = %slot_text(at), error = %e, "cannot claim schedule slot; giving up on it");
                return None;
            }
        }
    }
}

/// Longest sleep before the wall clock is read again while waiting for a
/// slot: a sleep runs on the monotonic clock, which a wall-clock step (NTP)
/// does not move and a suspended VM stops.
const WALL_CLOCK_RECHECK: Duration = Duration::from_secs(30);

/// Waits until the clock `now` (the wall clock, in service) reaches
/// `next`, reading it again at least every `recheck`
/// ([`WALL_CLOCK_RECHECK`]): a clock stepped back an hour does not fire the
/// 20:00 slot at 19:00, nor one stepped forward (or a VM resumed) fire it
/// an hour late. `false` when `stop` came first and the slot is still to
/// come: a stopped set fires no slot still to come, while one already due
/// fires (the set that takes over starts after it, and the claim in `runs`
/// keeps it once).
async fn wait_for(
    next: DateTime<Utc>,
    stop: &CancellationToken,
    now: impl Fn() -> DateTime<Utc>,
    recheck: Duration,
) -> bool {
    loop {
        let Ok(left) = (next - now()).to_std() else {
            return true;
        };
        if left.is_zero() {
            return true;
        }
        tokio::select! {
            biased;
            _ = stop.cancelled() => return next <= now(),
            _ = tokio::time::sleep(left.min(recheck)) => {}
        }
    }
}

/// Waits for slot `next` on the wall clock `now`, then picks the latest
/// slot due by then, with how many due slots it passed over; `None` when
/// stopped first. Of the slots due by then (a run that took longer than
/// the interval, the previous set draining on reload, a clock stepped
/// forward or a VM resumed during the wait), only the latest fires, once,
/// as a persistent timer would: a frequent schedule does not run over and
/// over to catch up, and a slot gone stale while waited for is not fired
/// beside the latest.
async fn latest_due(
    spec: &crate::manifest::Schedule,
    next: DateTime<Utc>,
    stop: &CancellationToken,
    now: impl Fn() -> DateTime<Utc>,
    recheck: Duration,
) -> Option<(DateTime<Utc>, u32)> {
    if !wait_for(next, stop, &now, recheck).await {
        return None;
    }
    let now = now();
    let (mut latest, mut skipped) = (next, 0u32);
    while let Some(later) = spec.cron.next_after(spec.tz, latest).filter(|t| *t <= now) {
        (latest, skipped) = (later, skipped + 1);
    }
    Some((latest, skipped))
}

/// Runs one schedule until `stop` is cancelled, firing slots due after
/// `since`: a set installed by a reload passes the moment it was installed
/// (the previous set was stopped then), so no slot falls between the two.
pub async fn run_schedule(
    runtime: Arc<Runtime>,
    plugin: String,
    schedule: usize,
    since: DateTime<Utc>,
    stop: CancellationToken,
) {
    let Some(spec) = runtime
        .plugin(&plugin)
        .and_then(|p| p.manifest.schedules.get(schedule).cloned())
    else {
        return;
    };
    let mut after = since;
    let mut first = true;
    while let Some(next) = spec.cron.next_after(spec.tz, after) {
        let Some((next, skipped)) =
            latest_due(&spec, next, &stop, Utc::now, WALL_CLOCK_RECHECK).await
        else {
            return;
        };
        // At start the slots of the catch-up window are expected: only
        // the latest is asked for (and runs only if no replica claimed it).
        if skipped > 0 && !first {
            tracing::warn!(plugin, skipped, slot = %slot_text(next), "slots due meanwhile are skipped; the latest fires");
        }
        first = false;
        fire(&runtime, &plugin, schedule, next).await;
        after = next;
    }
    // The manifest refuses a cron that never fires; this says if one ran out.
    tracing::error!(plugin, cron = spec.cron.as_str(), after = %slot_text(after), "the schedule has no slot left; it stops");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wall clock reading `base` at `started`, then stepped by `step`
    /// 50 ms later.
    fn stepped_clock(
        base: DateTime<Utc>,
        started: Instant,
        step: chrono::Duration,
    ) -> impl Fn() -> DateTime<Utc> {
        move || {
            let elapsed = started.elapsed();
            let stepped = if elapsed >= Duration::from_millis(50) {
                step
            } else {
                chrono::Duration::zero()
            };
            base + chrono::Duration::from_std(elapsed).unwrap() + stepped
        }
    }

    /// The wall clock stepped back while a slot is waited for: the slot
    /// fires when the wall clock reaches it, not once the time it was away
    /// has been slept (at a small scale: 300 ms back, a slot 100 ms away,
    /// read again every 20 ms).
    #[tokio::test]
    async fn a_clock_stepped_back_does_not_fire_a_slot_early() {
        let (base, started) = (Utc::now(), Instant::now());
        let wall = stepped_clock(base, started, chrono::Duration::milliseconds(-300));
        let next = base + chrono::Duration::milliseconds(100);
        let recheck = Duration::from_millis(20);
        assert!(wait_for(next, &CancellationToken::new(), &wall, recheck).await);
        assert!(wall() >= next);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(400), "{waited:?}");
    }

    /// A clock stepped forward (or a VM resumed) while a slot is waited
    /// for: the latest slot due once the wait ends fires, not the stale one
    /// the wait began for (at a small scale: a per-second schedule, the
    /// clock 10 s ahead 50 ms into the wait).
    #[tokio::test]
    async fn a_clock_stepped_forward_fires_only_the_latest_slot() {
        let spec = crate::manifest::Schedule {
            cron: crate::manifest::CronExpr::parse("* * * * * *").unwrap(),
            tz: chrono_tz::UTC,
            args: Vec::new(),
        };
        let base = Utc::now();
        let wall = stepped_clock(base, Instant::now(), chrono::Duration::seconds(10));
        // At least 100 ms away, so the step (50 ms in) falls in the wait.
        let after = base + chrono::Duration::milliseconds(100);
        let next = spec.cron.next_after(spec.tz, after).unwrap();
        let recheck = Duration::from_millis(20);
        let (fired, skipped) = latest_due(&spec, next, &CancellationToken::new(), &wall, recheck)
            .await
            .unwrap();
        // The wait ends 10 s ahead, 50 ms in; `next` is 0.1 s to 1.1 s
        // after the start: the latest slot is 8 s or more after it.
        assert!(
            fired >= next + chrono::Duration::seconds(8),
            "{next} {fired}"
        );
        assert!(fired <= wall(), "not a slot still to come");
        assert!((8..=11).contains(&skipped), "{skipped}");
    }

    /// Stopped: a slot still to come is not fired; one already due is.
    #[tokio::test]
    async fn a_stopped_set_fires_only_a_slot_already_due() {
        let stop = CancellationToken::new();
        stop.cancel();
        let now = Utc::now();
        let soon = now + chrono::Duration::seconds(5);
        assert!(!wait_for(soon, &stop, Utc::now, WALL_CLOCK_RECHECK).await);
        let past = now - chrono::Duration::seconds(5);
        assert!(wait_for(past, &stop, Utc::now, WALL_CLOCK_RECHECK).await);
    }
}
