//! The schedule's run history (`runs`) kept true and bounded: a run whose
//! process left is marked interrupted (this replica's own as it stops; at
//! start, those a crashed earlier life of this name left; every ten
//! minutes, those of replicas whose name no live process holds), and
//! finished runs older than [`RUNS_KEPT`] are deleted.

use std::time::Duration;
use tokio_util::sync::CancellationToken;

use super::replica;
use crate::backends::db::Value;
use crate::services::Services;

/// How often the history is tidied while serving.
const TIDY_EVERY: Duration = Duration::from_secs(600);
/// How long finished runs are kept: well past the longest catch-up window
/// (a day), whose claims they are.
const RUNS_KEPT: chrono::Duration = chrono::Duration::days(30);

/// Marks `replica`'s unfinished runs as interrupted, so history never shows
/// a run as still going after its process left.
pub async fn release(services: &Services, replica: &str) {
    let result = services
        .db
        .master()
        .execute(
            "UPDATE runs SET status = 'interrupted', finished_at = $1 WHERE replica = $2 AND status = 'running'",
            &[
                Value::Timestamp(chrono::Utc::now().timestamp_micros()),
                Value::Text(replica.to_string()),
            ],
        )
        .await;
    match result {
        Ok(0) => {}
        Ok(n) => tracing::warn!(runs = n, replica, "marked unfinished runs as interrupted"),
        Err(e) => tracing::error!(error = %e, replica, "could not release schedule runs"),
    }
}

/// Tidies the history now, then every [`TIDY_EVERY`] until `stop`.
pub async fn keep_tidy(services: &Services, stop: CancellationToken) {
    loop {
        release_departed(services).await;
        prune(services).await;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(TIDY_EVERY) => {}
        }
    }
}

/// Releases the runs of other replicas whose name no live process holds (a
/// crash, a kill). Only Redis is shared between processes: with the
/// in-process kv nothing is known of the others.
async fn release_departed(services: &Services) {
    if services.kv.backend_name() != "redis" {
        return;
    }
    let Ok(rows) = services
        .db
        .master()
        .query(
            "SELECT DISTINCT replica FROM runs WHERE status = 'running'",
            &[],
        )
        .await
    else {
        return;
    };
    for row in rows.rows {
        let Some(Value::Text(name)) = row.into_iter().next() else {
            continue;
        };
        if name != services.settings.replica && replica::departed(&services.kv, &name).await {
            release(services, &name).await;
        }
    }
}

/// Deletes finished runs older than [`RUNS_KEPT`].
async fn prune(services: &Services) {
    let cutoff = chrono::Utc::now() - RUNS_KEPT;
    let result = services
        .db
        .master()
        .execute(
            "DELETE FROM runs WHERE started_at < $1 AND status <> 'running'",
            &[Value::Timestamp(cutoff.timestamp_micros())],
        )
        .await;
    match result {
        Ok(0) => {}
        Ok(n) => tracing::info!(runs = n, "deleted finished runs older than 30 days"),
        Err(e) => tracing::warn!(error = %e, "could not prune the run history"),
    }
}
