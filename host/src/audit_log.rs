//! The audit log: append-only records in the master database, each chained to
//! the previous one by SHA-256 so an edited or deleted record is detectable.

use chrono::{DateTime, SubsecRound, TimeZone, Utc};
use sha2::{Digest, Sha256};

use crate::backends::db::{
    Budget, DbError, InTransaction, Pool, STATEMENT_TIMEOUT, Value, lite_run,
};

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone)]
pub struct NewRecord {
    pub actor: String,
    pub action: String,
    pub target: String,
    pub tenant: Option<String>,
    pub request_id: Option<String>,
    pub plugin: Option<String>,
    pub details: serde_json::Value,
}

/// Who ran this process's command, as the audit log names it:
/// `cli (<user>)`, the user `sudo` ran it for if any.
pub fn cli_actor() -> String {
    let user = ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "unknown".into());
    format!("cli ({user})")
}

/// The hash of a record given its predecessor's: over a canonical JSON array
/// of every stored field, so any edit changes it.
pub fn record_hash(prev: &str, at: DateTime<Utc>, r: &NewRecord) -> String {
    let canonical = serde_json::json!([
        prev,
        at.timestamp_millis(),
        r.actor,
        r.action,
        r.target,
        r.tenant,
        r.request_id,
        r.plugin,
        sorted_keys(&r.details),
    ]);
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

/// The same document with every object's keys in byte order: Postgres JSONB
/// hands keys back in its own order, so the hash must not depend on it.
fn sorted_keys(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), sorted_keys(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted_keys).collect()),
        Value::Number(n) => Value::Number(as_jsonb_returns(n)),
        other => other.clone(),
    }
}

/// A number as Postgres JSONB hands it back, which keeps decimals, not
/// floats: `-0.0` comes back as `0.0`, and a whole float that `serde_json`
/// writes with an exponent (`1e16`, `1.5e17`) as the integer it spells
/// (beyond `u64` `serde_json` reads it back as the same float). Applied when
/// a record is hashed and when it is verified, so the hash survives the trip.
fn as_jsonb_returns(n: &serde_json::Number) -> serde_json::Number {
    let Some(f) = n.as_f64().filter(|_| n.is_f64()) else {
        return n.clone();
    };
    if f == 0.0 {
        return serde_json::Number::from_f64(0.0).unwrap_or_else(|| n.clone());
    }
    let text = n.to_string();
    let Some((mantissa, exponent)) = text.split_once('e') else {
        return n.clone();
    };
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let fraction_digits = mantissa.split_once('.').map_or(0, |(_, f)| f.len());
    let zeros = exponent
        .parse::<usize>()
        .ok()
        .and_then(|e| e.checked_sub(fraction_digits));
    let Some(zeros) = zeros else {
        // A negative exponent, or not whole: JSONB's decimal reads back alike.
        return n.clone();
    };
    let digits = format!("{}{}", mantissa.replace('.', ""), "0".repeat(zeros));
    let whole = if negative {
        format!("-{digits}")
            .parse::<i64>()
            .map(serde_json::Number::from)
    } else {
        digits.parse::<u64>().map(serde_json::Number::from)
    };
    whole.unwrap_or_else(|_| n.clone())
}

/// The chain's last record, read once its lock is held: each append gives
/// itself the next id, so the order of ids is the chain's whatever the
/// table's id counter says (a plugin that may write the master could set
/// that counter to its end, or back, and so stop or fork the chain).
const LAST: &str = "SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1";
/// Postgres's counter is kept in step, for anything that still relies on
/// it (an older release during a rolling deploy), and only if it is there:
/// the record goes in whatever was done to the counter. (`0 * count(*)`
/// makes the subquery, and so `setval`, run.)
const INSERT_PG: &str = "INSERT INTO audit_log (id, at, actor, action, target, tenant, request_id, plugin, details, prev_hash, hash) \
                         VALUES ($1 + (SELECT 0 * count(*) FROM (SELECT setval(s, $1) FROM pg_get_serial_sequence('audit_log', 'id') AS s \
                         WHERE s IS NOT NULL) AS kept), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
const INSERT_LITE: &str = "INSERT INTO audit_log (id, at, actor, action, target, tenant, request_id, plugin, details, prev_hash, hash) \
                           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

/// Where the chain ends: the last record's id and hash (0 and [`GENESIS`]
/// before the first).
struct End {
    id: i64,
    hash: String,
}

impl End {
    fn of(last: Option<(i64, String)>) -> Self {
        let (id, hash) = last.unwrap_or_else(|| (0, GENESIS.to_string()));
        End { id, hash }
    }

    fn next_id(&self) -> Result<i64, DbError> {
        self.id
            .checked_add(1)
            .ok_or_else(|| DbError::Failed(format!("audit log ids end at {}", self.id)))
    }
}

/// The time a record is stamped with, taken once the chain's lock is held
/// (so ids and times run in the same order within one host). Millisecond
/// precision is what both backends store exactly.
fn stamp() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

/// Opens the append's transaction, takes the chain's lock (one appender at
/// a time across every replica) and reads the chain's end, in one round
/// trip: each statement of a simple query takes its own snapshot, so the
/// read sees every append committed before the lock was granted.
const BEGIN_LOCK_LAST: &str = "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock(7305425512); SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1";
/// [`BEGIN_LOCK_LAST`] inside a transaction already open (read committed).
const LOCK_LAST: &str = "SELECT pg_advisory_xact_lock(7305425512); SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1";

/// Takes the chain's lock (with `lock_last`, which also opens the
/// transaction or not), then inserts `record` after the chain's end; the
/// caller commits.
async fn insert_pg(
    conn: &mut sqlx::PgConnection,
    lock_last: &str,
    record: &NewRecord,
) -> Result<i64, DbError> {
    use sqlx::{Executor, Row};
    // A query without arguments goes as one simple query, statements and all.
    let rows = conn.fetch_all(lock_last).await?;
    let end = End::of(rows.iter().find_map(|r| {
        Some((
            r.try_get::<i64, _>("id").ok()?,
            r.try_get::<String, _>("hash").ok()?,
        ))
    }));
    let id = end.next_id()?;
    let at = stamp();
    let hash = record_hash(&end.hash, at, record);
    sqlx::query(INSERT_PG)
        .bind(id)
        .bind(at)
        .bind(&record.actor)
        .bind(&record.action)
        .bind(&record.target)
        .bind(&record.tenant)
        .bind(&record.request_id)
        .bind(&record.plugin)
        .bind(&record.details)
        .bind(&end.hash)
        .bind(&hash)
        .execute(&mut *conn)
        .await?;
    Ok(id)
}

/// Reads the chain's end and inserts `record` after it, in a SQLite
/// transaction that holds the file's write lock (`BEGIN IMMEDIATE`, so
/// another process appending meanwhile waits instead of forking the chain).
async fn insert_lite(
    conn: &mut sqlx::SqliteConnection,
    record: &NewRecord,
) -> Result<i64, DbError> {
    let (_, last) = lite_run(&mut *conn, LAST, &[], &mut Budget::unlimited()).await?;
    let end = End::of(last.rows.first().and_then(|r| match r.as_slice() {
        [Value::Int(id), Value::Text(hash)] => Some((*id, hash.clone())),
        _ => None,
    }));
    let id = end.next_id()?;
    let at = stamp();
    let hash = record_hash(&end.hash, at, record);
    let opt = |s: &Option<String>| s.clone().map(Value::Text).unwrap_or(Value::Null);
    let params = [
        Value::Int(id),
        Value::Timestamp(at.timestamp_micros()),
        Value::Text(record.actor.clone()),
        Value::Text(record.action.clone()),
        Value::Text(record.target.clone()),
        opt(&record.tenant),
        opt(&record.request_id),
        opt(&record.plugin),
        Value::Json(record.details.to_string()),
        Value::Text(end.hash),
        Value::Text(hash),
    ];
    lite_run(&mut *conn, INSERT_LITE, &params, &mut Budget::unlimited()).await?;
    Ok(id)
}

/// Appends within one process queue here rather than on SQLite's file lock
/// (whose waits back off coarsely); across processes the file lock decides.
static SQLITE_APPEND: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Appends a record and returns its id. Bounded like a statement: a master
/// that stops answering mid-append (the lease is then dropped, so its
/// connection closes and the server rolls the append back), or a wait at
/// SQLite's append lock, does not hold the caller and its slot for ever.
pub async fn append(master: &Pool, record: NewRecord) -> Result<i64, DbError> {
    tokio::time::timeout(STATEMENT_TIMEOUT, append_unbounded(master, record))
        .await
        .unwrap_or_else(|_| Err(DbError::Unavailable("audit append timed out".into())))
}

/// [`append`] for the record of a change already committed elsewhere (a
/// tenant database): asked again while the master cannot answer, within the
/// same bound, so a blip between the commit and its record does not leave
/// the change off the record. (An append whose answer was lost may then be
/// on record twice: a repeat, not a gap.)
pub async fn append_after_commit(master: &Pool, record: NewRecord) -> Result<i64, DbError> {
    let deadline = tokio::time::Instant::now() + STATEMENT_TIMEOUT;
    let mut pause = std::time::Duration::from_millis(200);
    loop {
        let attempt = append_unbounded(master, record.clone());
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Err(DbError::Unavailable(_) | DbError::Busy(_)))
                if tokio::time::Instant::now() + pause < deadline =>
            {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(2));
            }
            Ok(result) => return result,
            Err(_) => return Err(DbError::Unavailable("audit append timed out".into())),
        }
    }
}

async fn append_unbounded(master: &Pool, record: NewRecord) -> Result<i64, DbError> {
    match master {
        Pool::Pg(pool) => {
            let mut lease = pool.lease().await?;
            // On any failure the lease is dropped unreleased: its connection
            // closes, and the server rolls the open transaction back.
            let id = insert_pg(&mut lease, BEGIN_LOCK_LAST, &record).await?;
            sqlx::Executor::execute(&mut *lease, "COMMIT").await?;
            lease.release();
            Ok(id)
        }
        Pool::Sqlite(pool) => {
            let _guard = SQLITE_APPEND.lock().await;
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            let id = insert_lite(&mut tx, &record).await?;
            tx.commit().await?;
            Ok(id)
        }
    }
}

/// Runs `statements` on the master and appends `record`, with the rows each
/// statement touched in its details, in the same transaction: the change
/// and its record commit together or not at all. (A change to a tenant's
/// database is recorded after its commit, [`append_after_commit`].)
pub async fn transaction_recorded(
    master: &Pool,
    statements: &[(String, Vec<Value>)],
    budget: &mut Budget,
    caller_deadline: Option<tokio::time::Instant>,
    mut record: NewRecord,
) -> Result<(i64, Vec<u64>), DbError> {
    let (_, recorded) = master
        .transaction_then(
            statements,
            budget,
            caller_deadline,
            async move |conn, done| {
                let rows: Vec<u64> = done.iter().map(|(n, _)| *n).collect();
                record.details["rows"] = serde_json::json!(rows);
                let id = match conn {
                    InTransaction::Pg(conn) => insert_pg(conn, LOCK_LAST, &record).await?,
                    InTransaction::Sqlite(conn) => insert_lite(conn, &record).await?,
                };
                Ok((id, rows))
            },
        )
        .await?;
    Ok(recorded)
}

/// Result of walking the chain.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verification {
    pub records: u64,
    /// The first record whose hash or link does not match, with the reason.
    pub broken_at: Option<(i64, String)>,
}

/// Recomputes every hash in id order.
pub async fn verify(master: &Pool) -> Result<Verification, DbError> {
    Ok(walk(master, Link::genesis()).await?.0)
}

/// Where a walk of the chain stands: the last record checked (id 0 and the
/// genesis hash before the first) and how many were checked.
#[derive(Debug, Clone)]
struct Link {
    id: i64,
    hash: String,
    records: u64,
}

impl Link {
    fn genesis() -> Self {
        Link {
            id: 0,
            hash: GENESIS.to_string(),
            records: 0,
        }
    }
}

/// Checks every record after `from`, in id order; returns the verdict and,
/// when the chain holds, where it ends.
async fn walk(master: &Pool, from: Link) -> Result<(Verification, Option<Link>), DbError> {
    const PAGE: i64 = 1000;
    let Link {
        id: mut after,
        hash: mut prev,
        mut records,
    } = from;
    loop {
        let page = master
            .query(
                "SELECT id, at, actor, action, target, tenant, request_id, plugin, details, prev_hash, hash \
                 FROM audit_log WHERE id > $1 ORDER BY id LIMIT $2",
                &[Value::Int(after), Value::Int(PAGE)],
            )
            .await?;
        if page.rows.is_empty() {
            let end = Link {
                id: after,
                hash: prev,
                records,
            };
            return Ok((
                Verification {
                    records,
                    broken_at: None,
                },
                Some(end),
            ));
        }
        for row in &page.rows {
            let text = |i: usize| match &row[i] {
                Value::Text(s) | Value::Json(s) => Some(s.clone()),
                _ => None,
            };
            let id = match row[0] {
                Value::Int(id) => id,
                _ => return Err(DbError::Failed("audit id is not an integer".into())),
            };
            let at = match row[1] {
                Value::Timestamp(t) => Utc.timestamp_micros(t).single(),
                _ => None,
            };
            let Some(at) = at else {
                return Ok((broken(records, id, "timestamp is unreadable"), None));
            };
            let details: serde_json::Value = text(8)
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or(serde_json::Value::Null);
            let record = NewRecord {
                actor: text(2).unwrap_or_default(),
                action: text(3).unwrap_or_default(),
                target: text(4).unwrap_or_default(),
                tenant: text(5),
                request_id: text(6),
                plugin: text(7),
                details,
            };
            let stored_prev = text(9).unwrap_or_default();
            let stored_hash = text(10).unwrap_or_default();
            if stored_prev != prev {
                return Ok((
                    broken(records, id, "does not link to the previous record"),
                    None,
                ));
            }
            if record_hash(&prev, at, &record) != stored_hash {
                return Ok((broken(records, id, "contents do not match its hash"), None));
            }
            prev = stored_hash;
            records += 1;
            after = id;
        }
    }
}

/// How long the console's checks go on from where the last one ended
/// before the whole chain is walked again.
const WALK_WHOLE_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Where this process last found the chain whole, so each look at the
/// console's Audit tab checks only the records added since: the whole chain
/// on every load grew with the log (a million records, seconds of hashing
/// and a thousand queries per load). The whole chain is walked again at
/// least every [`WALK_WHOLE_EVERY`], and `neo-ops audit verify` always walks
/// it all.
#[derive(Default)]
pub struct Checked {
    state: tokio::sync::Mutex<CheckedState>,
}

#[derive(Default)]
struct CheckedState {
    /// Where the chain last ended whole, and when it was last walked whole.
    end: Option<(Link, std::time::Instant)>,
    /// A record this process checked that has since changed or gone: kept
    /// for the process's life, since a walk from the start cannot see it.
    lost: Option<Verification>,
}

impl Checked {
    /// Verifies the chain, going on from where the last verification
    /// ended when that was recent. The record it ended at must still be
    /// there with the same hash: a log cut back past it (the newest records
    /// deleted) is caught, which a walk from the start cannot see.
    pub async fn verify(&self, master: &Pool) -> Result<Verification, DbError> {
        // One look at a time: concurrent loads wait and then go on from
        // where the first ended.
        let mut state = self.state.lock().await;
        if let Some(lost) = &state.lost {
            return Ok(lost.clone());
        }
        // A copy: a look that fails or is dropped part way leaves the end
        // as it was, to be checked next time.
        let (from, whole_at) = match state.end.clone() {
            // Whatever its age, the end last found must still be there.
            Some((end, whole_at)) if end.id > 0 => {
                let rows = master
                    .query(
                        "SELECT hash FROM audit_log WHERE id = $1",
                        &[Value::Int(end.id)],
                    )
                    .await;
                let why = match rows?.rows.first().and_then(|r| r.first()) {
                    Some(Value::Text(h)) if *h == end.hash => None,
                    Some(_) => Some("changed since it was checked"),
                    None => Some("was checked earlier and is gone"),
                };
                if let Some(why) = why {
                    tracing::error!(
                        id = end.id,
                        why,
                        "the audit log lost a record this process had checked"
                    );
                    let lost = broken(end.records, end.id, why);
                    state.lost = Some(lost.clone());
                    return Ok(lost);
                }
                if whole_at.elapsed() < WALK_WHOLE_EVERY {
                    (end, whole_at)
                } else {
                    (Link::genesis(), std::time::Instant::now())
                }
            }
            _ => (Link::genesis(), std::time::Instant::now()),
        };
        let (verdict, end) = walk(master, from).await?;
        state.end = end.map(|end| (end, whole_at));
        Ok(verdict)
    }
}

fn broken(records: u64, id: i64, why: &str) -> Verification {
    Verification {
        records,
        broken_at: Some((id, why.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_ignores_the_order_keys_come_back_in() {
        let record = |details: &str| NewRecord {
            actor: "oncall".into(),
            action: "console.unlock_pin".into(),
            target: "staff:7".into(),
            tenant: Some("acme".into()),
            request_id: None,
            plugin: None,
            details: serde_json::from_str(details).unwrap(),
        };
        let at = DateTime::from_timestamp_millis(1_764_000_000_000).unwrap();
        let a = record(r#"{"b": 1, "a": {"y": [1, {"d": 2, "c": 3}], "x": null}}"#);
        let b = record(r#"{"a": {"x": null, "y": [1, {"c": 3, "d": 2}]}, "b": 1}"#);
        assert_eq!(record_hash("0", at, &a), record_hash("0", at, &b));
        let c = record(r#"{"a": {"x": null, "y": [1, {"c": 3, "d": 4}]}, "b": 1}"#);
        assert_ne!(record_hash("0", at, &a), record_hash("0", at, &c));
    }

    #[test]
    fn numbers_hash_as_postgres_jsonb_returns_them() {
        let hash = |details: &str| {
            let r = NewRecord {
                actor: "a".into(),
                action: "b".into(),
                target: "c".into(),
                tenant: None,
                request_id: None,
                plugin: None,
                details: serde_json::from_str(details).unwrap(),
            };
            record_hash("0", DateTime::from_timestamp_millis(0).unwrap(), &r)
        };
        // As written, and as JSONB gives each back.
        for (sent, returned) in [
            ("-0.0", "0.0"),
            ("1e16", "10000000000000000"),
            ("1.5e17", "150000000000000000"),
            ("-2.5e16", "-25000000000000000"),
            ("1.5e18", "1500000000000000000"),
            ("2e19", "20000000000000000000"),
        ] {
            assert_eq!(
                hash(&format!(r#"{{"n": [{sent}]}}"#)),
                hash(&format!(r#"{{"n": [{returned}]}}"#)),
                "{sent}"
            );
        }
        // What already round-trips keeps its own hash.
        for (a, b) in [("1.0", "1"), ("0.5", "0.25"), ("1e16", "1e17")] {
            assert_ne!(hash(&format!("[{a}]")), hash(&format!("[{b}]")), "{a}");
        }
    }
}
