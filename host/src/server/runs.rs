//! The schedule's run history (`runs`) kept true and bounded: a run whose
//! process left is marked interrupted (this replica's own as it stops; at
//! start, those a crashed earlier life of this name left; those of
//! replicas whose name no live process held at two looks ten minutes
//! apart), and finished runs older than [`RUNS_KEPT`] are deleted. The
//! same passes delete the embedded mailer's outbox mail older than
//! [`crate::backends::mail::OUTBOX_KEPT`].

use std::collections::HashSet;
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
/// a run as still going after its process left. True when done.
pub async fn release(services: &Services, replica: &str) -> bool {
    release_started_before(services, replica, None).await
}

/// [`release`] for the runs that started before `before` (microseconds),
/// when given.
async fn release_started_before(services: &Services, replica: &str, before: Option<i64>) -> bool {
    const ALL: &str = "UPDATE runs SET status = 'interrupted', finished_at = $1 \
                       WHERE replica = $2 AND status = 'running'";
    const STARTED_BEFORE: &str = "UPDATE runs SET status = 'interrupted', finished_at = $1 \
                                  WHERE replica = $2 AND status = 'running' AND started_at < $3";
    let mut params = vec![
        Value::Timestamp(chrono::Utc::now().timestamp_micros()),
        Value::Text(replica.to_string()),
    ];
    params.extend(before.map(Value::Timestamp));
    let sql = if before.is_some() {
        STARTED_BEFORE
    } else {
        ALL
    };
    let result = services.db.master().execute(sql, &params).await;
    match result {
        Ok(0) => true,
        Ok(n) => {
            tracing::warn!(runs = n, replica, "marked unfinished runs as interrupted");
            true
        }
        Err(e) => {
            tracing::error!(error = %e, replica, "could not release schedule runs");
            false
        }
    }
}

/// The most a start waits for the history to be tidied (a master that is
/// slow or away must not hold the listener back): what is left is done by
/// the passes every [`TIDY_EVERY`].
const START_WITHIN: Duration = Duration::from_secs(2);

/// What tidying the history remembers between its passes.
#[derive(Default)]
pub struct Tidy {
    /// Replicas with running runs whose name no live process held at the
    /// last pass: released if the next pass finds them so again (a process
    /// of an older version, which holds no name, or a Redis restarted empty,
    /// is not taken for dead at one look).
    departed: HashSet<String>,
    /// When this process started, while the runs an earlier life of its name
    /// left are still to be released (the start could not in time): those
    /// started before it, never this process's own.
    own_left_before: Option<i64>,
    /// At start, as the sole server of its files (`server::sole`): the
    /// runs other names left `running` were cut off (a crash, a kill -9
    /// of a server whose name was its pid) and are released at once.
    others_left: bool,
}

impl Tidy {
    /// Tidies at start, within [`START_WITHIN`]: the runs an earlier life of
    /// this name left going (when this process holds the name; it has run
    /// nothing yet), a first look at departed replicas, old runs pruned.
    pub async fn at_start(services: &Services, own_name_held: bool) -> Self {
        let mut tidy = Self {
            own_left_before: own_name_held.then(|| chrono::Utc::now().timestamp_micros()),
            others_left: services
                .sole_server
                .load(std::sync::atomic::Ordering::Acquire),
            ..Self::default()
        };
        let pass = tidy.pass(services);
        if tokio::time::timeout(START_WITHIN, pass).await.is_err() {
            tracing::warn!("the run history could not be tidied at start; it will be later");
        }
        tidy
    }

    /// Tidies every [`TIDY_EVERY`] until `stop`.
    pub async fn keep(mut self, services: &Services, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(TIDY_EVERY) => {}
            }
            self.pass(services).await;
        }
    }

    async fn pass(&mut self, services: &Services) {
        if self.others_left && release_all_others(services).await {
            self.others_left = false;
        }
        if let Some(before) = self.own_left_before {
            let own = &services.settings.replica;
            if release_started_before(services, own, Some(before)).await {
                self.own_left_before = None;
            }
        }
        self.release_departed(services).await;
        prune(services).await;
        let pruned = services.mail.prune_outbox().await;
        if pruned > 0 {
            tracing::info!(pruned, "outbox mail older than 30 days deleted");
        }
    }

    /// Releases the runs of other replicas whose name no live process has
    /// held at two passes in a row (a crash, a kill). Only Redis is shared
    /// between processes: with the in-process kv nothing is known of the
    /// others.
    async fn release_departed(&mut self, services: &Services) {
        if services.kv.backend_name() != "redis" {
            return;
        }
        let mut departed = HashSet::new();
        for name in others_running(services).await.unwrap_or_default() {
            if replica::departed(&services.kv, &name).await {
                departed.insert(name);
            }
        }
        for name in departed.intersection(&self.departed) {
            release(services, name).await;
        }
        self.departed = departed;
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

/// The other replica names with runs still `running`; `None` when the
/// master could not say.
async fn others_running(services: &Services) -> Option<Vec<String>> {
    let running = services
        .db
        .master()
        .query(
            "SELECT DISTINCT replica FROM runs WHERE status = 'running'",
            &[],
        )
        .await;
    let rows = running.ok()?.rows;
    let names = rows
        .into_iter()
        .filter_map(|row| match row.into_iter().next() {
            Some(Value::Text(name)) if name != services.settings.replica => Some(name),
            _ => None,
        });
    Some(names.collect())
}

/// Releases every other name's running runs: only for the sole server of
/// its files, which no other server shares. Whether all were, so a pass
/// that could not (the master busy) is followed by another.
async fn release_all_others(services: &Services) -> bool {
    let Some(names) = others_running(services).await else {
        return false;
    };
    let mut all = true;
    for name in names {
        all &= release(services, &name).await;
    }
    all
}
