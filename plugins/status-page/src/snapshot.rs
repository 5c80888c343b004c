//! The board as last read, kept in kv, so the public routes still answer
//! while the master database cannot (an outage is when a status page
//! matters most). Written after every incident change, and by one request
//! in [`REFRESH_ONE_IN`] (so a deployment that has never changed an
//! incident has one too, and a change made outside the commands is caught
//! up), each under its own key: a request that read the board just before
//! a change committed cannot overwrite the change's newer snapshot. Read
//! only when the database does not answer: the newer of the two.

use neo_ops_sdk::serde_json;
use neo_ops_sdk::{Failure, kv, log, time};
use serde::{Deserialize, Serialize};

use crate::incidents::{self, Board, Incident};

/// Written by the commands, and by sampled requests; the format's version
/// is in the name, so a snapshot another version wrote is never misread.
const BY_CHANGE: &str = "status:snapshot:v1:change";
const BY_REQUEST: &str = "status:snapshot:v1:request";
/// One request in this many (by the clock's microseconds) refreshes the
/// snapshot: a kv write and one more query per that many requests.
const REFRESH_ONE_IN: i64 = 512;
/// The resolved incidents the human page lists.
pub const RESOLVED_DAYS: i64 = 14;

#[derive(Serialize, Deserialize)]
pub struct Snapshot {
    /// When the board was read (µs since the epoch).
    pub taken_at: i64,
    pub board: Board,
    /// Resolved within [`RESOLVED_DAYS`] days, newest first.
    pub resolved: Vec<Incident>,
}

/// Who keeps a snapshot.
#[derive(Clone, Copy)]
pub enum By {
    Change,
    Request,
}

/// Reads the board and its resolved incidents and keeps them; a failure is
/// logged, never the caller's (the change or the request stands).
pub fn save(by: By) {
    let key = match by {
        By::Change => BY_CHANGE,
        By::Request => BY_REQUEST,
    };
    let taken = || -> Result<Snapshot, Failure> {
        Ok(Snapshot {
            taken_at: time::now_micros(),
            board: incidents::board()?,
            resolved: incidents::recently_resolved(RESOLVED_DAYS)?,
        })
    };
    let stored = taken().map(|s| serde_json::to_vec(&s)).and_then(|json| {
        let json = json.map_err(|e| neo_ops_sdk::reply::fail(500, e.to_string()))?;
        kv::set(key, &json, None).map_err(Failure::from)
    });
    if let Err(f) = stored {
        log::log(
            log::Level::Warn,
            &format!("status snapshot not kept: {}", f.message),
            &[],
        );
    }
}

/// Refreshes the snapshot on one request in [`REFRESH_ONE_IN`].
pub fn now_and_then() {
    if time::now_micros() % REFRESH_ONE_IN == 0 {
        save(By::Request);
    }
}

/// The newer of the snapshots kept, if there is one and kv answers.
pub fn load() -> Option<Snapshot> {
    [BY_CHANGE, BY_REQUEST]
        .into_iter()
        .filter_map(read)
        .max_by_key(|s| s.taken_at)
}

fn read(key: &str) -> Option<Snapshot> {
    let raw = kv::get(key).ok()??;
    serde_json::from_slice(&raw)
        .inspect_err(|e| {
            let msg = format!("status snapshot \"{key}\" unreadable: {e}");
            log::log(log::Level::Warn, &msg, &[]);
        })
        .ok()
}
