//! One live process per replica name. A replica's name keys its queue
//! consumers' in-flight lists and its schedule runs: a second process given
//! the same `NEO_OPS_REPLICA` would take the first's running jobs back onto
//! the queue at start (so they run twice) and mark its runs interrupted when
//! it stops. Each process claims its name in Redis and keeps the claim
//! fresh; `serve` refuses to start under a name a live process holds.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use crate::backends::kv::{HOST_NAMESPACE, Kv};
use crate::services::Services;

/// How long a claim outlives its last refresh: a process that died without
/// releasing its name holds it this long at most.
const HOLD: Duration = Duration::from_secs(30);
/// How often a live process refreshes its claim.
const REFRESH: Duration = Duration::from_secs(2);
/// How long a claim goes unrefreshed before it is taken for a dead
/// process's (the same replica restarted after a crash): a live holder
/// refreshes it every [`REFRESH`].
const WATCH: Duration = Duration::from_secs(2 * REFRESH.as_secs() + 1);
const POLL: Duration = Duration::from_millis(500);

fn claim_key(replica: &str) -> String {
    format!("{HOST_NAMESPACE}replica:{replica}")
}

/// This process's claim on its replica name.
pub struct Claim {
    key: String,
    token: String,
    /// Whether the name was taken at start (not when Redis could not be
    /// asked).
    pub held: bool,
}

/// Whether no live process holds `replica`'s name (a Redis error says
/// nothing).
pub async fn departed(kv: &Kv, replica: &str) -> bool {
    matches!(kv.get(&claim_key(replica)).await, Ok(None))
}

/// Claims this process's replica name, or fails when a live process holds
/// it. A claim left by a process that died is taken over once it goes
/// unrefreshed for [`WATCH`]. When Redis cannot be asked, the start goes on
/// and [`keep`] claims the name once it can.
pub async fn claim(services: &Services) -> anyhow::Result<Claim> {
    let (kv, replica) = (&services.kv, services.settings.replica.as_str());
    let mut claim = Claim {
        key: claim_key(replica),
        token: Kv::lock_token(),
        held: true,
    };
    // The holder being watched (its token) and since when, and its claim's
    // time to live at the last look.
    let mut watched: Option<(Vec<u8>, Instant)> = None;
    let mut last_ttl = None;
    // Redis failing while a holder is watched delays the start, up to this.
    let give_up = Instant::now() + HOLD;
    loop {
        match kv.set_nx(&claim.key, claim.token.as_bytes(), HOLD).await {
            Ok(true) => return Ok(claim),
            Ok(false) => {}
            // Nobody seen holding it: Redis is away, the start goes on.
            // Once a holder was seen, starting would take its running jobs.
            Err(e) if watched.is_none() || Instant::now() >= give_up => {
                tracing::warn!(replica, error = %e, "could not claim the replica name yet; serving, and claiming it once Redis answers");
                claim.held = false;
                return Ok(claim);
            }
            Err(_) => {
                tokio::time::sleep(POLL).await;
                continue;
            }
        }
        let (holder, ttl) = (kv.get(&claim.key).await, kv.ttl(&claim.key).await);
        let (Ok(Some(holder)), Ok(ttl)) = (holder, ttl) else {
            // Released meanwhile, or Redis stumbled: a look missed is no
            // evidence either way, so the watch starts again.
            (watched, last_ttl) = (None, None);
            tokio::time::sleep(POLL).await;
            continue;
        };
        if watched.as_ref().is_none_or(|(token, _)| *token != holder) {
            (watched, last_ttl) = (Some((holder, Instant::now())), None);
        }
        if let (Some(before), Some(now)) = (last_ttl, ttl)
            && now > before
        {
            anyhow::bail!(
                "replica name \"{replica}\" is in use by another live process \
                 (its claim was refreshed just now); give each process its own NEO_OPS_REPLICA"
            );
        }
        // A live holder's claim never has less than HOLD - REFRESH to live:
        // one with HOLD - WATCH or less went WATCH without a refresh, however
        // the looks fell. (One with no expiry at all is watched instead.)
        let (token, since) = watched.as_ref().expect("set above");
        let unrefreshed = match ttl {
            Some(ms) => Duration::from_millis(ms) <= HOLD - WATCH,
            None => since.elapsed() >= WATCH,
        };
        if unrefreshed {
            // The process that held it is gone. Its claim is removed only if
            // still its own, then taken like a free one: of two processes
            // taking over at once, one gets it and the other watches the
            // winner (and sees it refreshed).
            let dead = String::from_utf8_lossy(token).into_owned();
            if kv.release_held(&claim.key, &dead).await.unwrap_or(false) {
                tracing::warn!(
                    replica,
                    "took the replica name back from a process that stopped without releasing it"
                );
            }
            (watched, last_ttl) = (None, None);
            continue;
        }
        last_ttl = ttl.or(last_ttl);
        tokio::time::sleep(POLL).await;
    }
}

/// Keeps the claim fresh until `stop`, then releases it. A claim another
/// process took meanwhile (both started while Redis was away) fails
/// `/readyz` and is logged until it is this process's again.
pub async fn keep(services: &Services, claim: Claim, stop: CancellationToken) {
    let (kv, replica) = (&services.kv, services.settings.replica.as_str());
    let mut reported = false;
    loop {
        let held = match kv.extend_held(&claim.key, &claim.token, HOLD).await {
            Ok(true) => Some(true),
            // Expired (a long outage): taken again if no one else has.
            Ok(false) => kv
                .set_nx(&claim.key, claim.token.as_bytes(), HOLD)
                .await
                .ok(),
            Err(_) => None,
        };
        if let Some(held) = held {
            if !held && !reported {
                tracing::error!(
                    replica,
                    "replica name \"{replica}\" is in use by another live process; \
                     give each process its own NEO_OPS_REPLICA"
                );
            } else if held && reported {
                tracing::info!(replica, "the replica name is this process's again");
            }
            reported = !held;
            services.replica_taken.store(!held, Ordering::Release);
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(REFRESH) => {}
        }
    }
    let _ = kv.release_held(&claim.key, &claim.token).await;
}
