//! Bearer tokens: printed once at creation, stored as SHA-256 only, looked up
//! by their public id and compared in constant time; a copy of the live
//! tokens ([`Tokens`]) keeps made-up tokens off the database, and vouches
//! for genuine ones on requests that change nothing while it cannot be
//! reached.

use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

use crate::backends::db::{Budget, DbError, Pool, RowSet, Value};
use crate::manifest::Role;

#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Creates a token that does not expire and returns it; only its hash is stored.
pub async fn create_token(master: &Pool, role: Role, name: &str) -> Result<String, DbError> {
    create_token_expiring(master, role, name, None).await
}

/// [`create_token`], refused from `expires_at` (microseconds since the
/// epoch) on, as a revoked token is.
pub async fn create_token_expiring(
    master: &Pool,
    role: Role,
    name: &str,
    expires_at: Option<i64>,
) -> Result<String, DbError> {
    let mut bytes = [0u8; 36];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token_id = hex::encode(&bytes[..4]);
    let token = format!("neo_{token_id}_{}", hex::encode(&bytes[4..]));
    master
        .execute(
            "INSERT INTO api_tokens (token_id, name, role, token_hash, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
            &[
                Value::Text(token_id),
                Value::Text(name.into()),
                Value::Text(role.as_str().into()),
                Value::Text(sha256_hex(&token)),
                expires_at.map_or(Value::Null, Value::Timestamp),
            ],
        )
        .await?;
    Ok(token)
}

/// A token as `token list` shows it: never its secret or hash.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenInfo {
    pub token_id: String,
    pub name: String,
    pub role: String,
    /// RFC 3339, UTC.
    pub created_at: Option<String>,
    pub revoked_at: Option<String>,
    /// When it stops being accepted, if ever (RFC 3339, UTC).
    pub expires_at: Option<String>,
}

/// The condition a live token meets, the time now being `$<now>`: not
/// revoked, and not expired.
fn live(now: usize) -> String {
    format!("revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ${now})")
}

fn now() -> Value {
    Value::Timestamp(chrono::Utc::now().timestamp_micros())
}

/// The live tokens, oldest first; revoked and expired ones too with
/// `include_dead`.
pub async fn list_tokens(master: &Pool, include_dead: bool) -> Result<Vec<TokenInfo>, DbError> {
    let (filter, params) = if include_dead {
        (String::new(), vec![])
    } else {
        (format!(" WHERE {}", live(1)), vec![now()])
    };
    let rows = master
        .query(
            &format!(
                "SELECT token_id, name, role, created_at, revoked_at, expires_at \
                 FROM api_tokens{filter} ORDER BY id"
            ),
            &params,
        )
        .await?;
    let text = |v: &Value| match v {
        Value::Text(s) => s.clone(),
        _ => String::new(),
    };
    let when = |v: &Value| match v {
        Value::Timestamp(us) => chrono::DateTime::from_timestamp_micros(*us)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        Value::Text(s) => Some(s.clone()),
        _ => None,
    };
    Ok(rows
        .rows
        .iter()
        .map(|r| TokenInfo {
            token_id: text(&r[0]),
            name: text(&r[1]),
            role: text(&r[2]),
            created_at: when(&r[3]),
            revoked_at: when(&r[4]),
            expires_at: when(&r[5]),
        })
        .collect())
}

/// The id `token revoke` was given: the 8 hex digits, in either case, or
/// the whole token pasted as it is (its id is taken from it).
pub fn given_token_id(given: &str) -> Option<String> {
    let given = given.trim();
    let id = token_id(given).unwrap_or(given);
    (id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_ascii_lowercase())
}

/// A token name tells records apart in the audit log: 1 to 64 letters,
/// digits, spaces and `. _ - @`, so it can never pass for a plugin's own
/// actor (`purge (schedule)`).
pub fn valid_token_name(name: &str) -> bool {
    (1..=64).contains(&name.chars().count())
        && name.trim() == name
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '.' | '_' | '-' | '@'))
}

/// Revokes a token by its public id (the 8 hex digits after `neo_`).
pub async fn revoke_token(master: &Pool, token_id: &str) -> Result<bool, DbError> {
    let n = master
        .execute(
            "UPDATE api_tokens SET revoked_at = $1 WHERE token_id = $2 AND revoked_at IS NULL",
            &[now(), Value::Text(token_id.into())],
        )
        .await?;
    Ok(n > 0)
}

/// The public id of a well-formed token (`neo_<8 hex>_<secret>`).
fn token_id(token: &str) -> Option<&str> {
    token
        .strip_prefix("neo_")
        .and_then(|t| t.split_once('_'))
        .map(|(id, _)| id)
        .filter(|id| id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// How old the host's copy of the token table may get before it is read again.
const REFRESH: Duration = Duration::from_secs(10);
/// Lookups of token ids the copy does not know, at once.
const UNKNOWN_AT_ONCE: usize = 2;
/// How long a lookup of an unknown id waits for its turn before the request
/// is answered 503.
const UNKNOWN_WAIT: Duration = Duration::from_secs(2);
/// How soon a read of the token table that failed is tried again.
const REREAD_AFTER_FAILURE: Duration = Duration::from_secs(1);
/// Ids remembered as unknown to the database until the next read.
const ABSENT_KEPT: usize = 10_000;
/// How old a copy may be and still vouch for a token the master cannot
/// confirm: past this a revocation made through another replica could go
/// unseen too long.
const VOUCHES_FOR: Duration = Duration::from_secs(15 * 60);

/// What the host knows of the token table, to keep a flood of made-up or
/// guessed tokens off the master database: the live tokens, read again
/// every [`REFRESH`]. A token whose id is known is checked against its
/// hash in memory, and only a match (a genuine token) asks the database,
/// which has the final word on revocation; while the database cannot be
/// reached, a copy read in the last [`VOUCHES_FOR`] vouches for it on a
/// request that changes nothing (so `/metrics` is still scraped through a
/// master outage), as long as it has not expired. An id the copy does
/// not know (a token made since, or a made-up one) asks the database
/// [`UNKNOWN_AT_ONCE`] at a time, and one found absent is not asked about
/// again until the next read.
pub struct Tokens {
    copy: std::sync::RwLock<Copy>,
    /// Whether the copy has vouched since the master last answered (to log
    /// the change once each way).
    vouching: std::sync::atomic::AtomicBool,
    reading: tokio::sync::Mutex<()>,
    unknown: tokio::sync::Semaphore,
}

#[derive(Default)]
struct Copy {
    read_at: Option<Instant>,
    /// When the table was last read whole (`read_at` is moved on a failed
    /// read too, to pace the next).
    read_whole_at: Option<Instant>,
    live: HashMap<String, Known>,
    absent: HashSet<String>,
}

/// A live token as the copy holds it.
#[derive(Clone)]
struct Known {
    hash: String,
    /// `None` for a role this build does not know.
    principal: Option<Principal>,
    /// Microseconds since the epoch.
    expires_at: Option<i64>,
}

impl Known {
    /// From a row of `token_hash, name, role, expires_at`.
    fn from_row(row: &[Value]) -> Option<Self> {
        let [
            Value::Text(hash),
            Value::Text(name),
            Value::Text(role),
            expires,
        ] = row
        else {
            return None;
        };
        let expires_at = match expires {
            Value::Null => None,
            Value::Timestamp(us) => Some(*us),
            // Unreadable: kept (the database still confirms the token), but
            // taken as expired, so never vouched for.
            Value::Text(t) => Some(
                chrono::DateTime::parse_from_rfc3339(t).map_or(i64::MIN, |t| t.timestamp_micros()),
            ),
            _ => Some(i64::MIN),
        };
        Some(Self {
            hash: hash.clone(),
            principal: Role::parse(role).map(|role| Principal {
                name: name.clone(),
                role,
            }),
            expires_at,
        })
    }

    fn expired(&self) -> bool {
        self.expires_at
            .is_some_and(|at| at <= chrono::Utc::now().timestamp_micros())
    }
}

/// Longest a token lookup waits for the master: a hung one must not hold
/// every authenticated request for the 30 s statement timeout.
const LOOKUP_LIMIT: Duration = Duration::from_secs(2);

async fn ask(master: &Pool, sql: &str, params: &[Value]) -> Result<RowSet, DbError> {
    let deadline = tokio::time::Instant::now() + LOOKUP_LIMIT;
    let mut budget = Budget::unlimited();
    let run = master.run_until(sql, params, &mut budget, Some(deadline));
    Ok(run.await?.1)
}

/// Why a presented token could not be judged.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Too many unknown token ids are being looked up (a flood of made-up
    /// tokens, most likely): the caller may try again shortly.
    #[error("too many unknown tokens are being looked up")]
    Busy,
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A token, once looked at.
enum Seen {
    /// The copy holds its id.
    Known(Known),
    /// The database said so since the last read.
    Absent,
    Unknown,
}

impl Default for Tokens {
    fn default() -> Self {
        Self::new()
    }
}

impl Tokens {
    pub fn new() -> Self {
        Self {
            copy: Default::default(),
            vouching: Default::default(),
            reading: Default::default(),
            unknown: tokio::sync::Semaphore::new(UNKNOWN_AT_ONCE),
        }
    }

    /// The principal a presented token stands for, if it is live. With
    /// `may_vouch` (a request that changes nothing) the copy vouches for a
    /// genuine token while the master cannot be reached.
    pub async fn authenticate(
        &self,
        master: &Pool,
        token: &str,
        may_vouch: bool,
    ) -> Result<Option<Principal>, AuthError> {
        let Some(id) = token_id(token) else {
            return Ok(None);
        };
        self.read_if_stale(master).await?;
        let presented = sha256_hex(token);
        match self.seen(id) {
            Seen::Known(known) if !same_hash(&known.hash, &presented) => Ok(None),
            Seen::Known(known) => {
                self.confirm(master, id, &presented, &known, may_vouch)
                    .await
            }
            Seen::Absent => Ok(None),
            Seen::Unknown => {
                let Ok(Ok(_turn)) =
                    tokio::time::timeout(UNKNOWN_WAIT, self.unknown.acquire()).await
                else {
                    return Err(AuthError::Busy);
                };
                let found = lookup_any(master, id).await?;
                {
                    let mut copy = self.copy.write().unwrap_or_else(|p| p.into_inner());
                    match &found {
                        // Made since the last read: the copy learns it now.
                        Some(known) => {
                            copy.live.insert(id.to_string(), known.clone());
                        }
                        None if copy.absent.len() < ABSENT_KEPT => {
                            copy.absent.insert(id.to_string());
                        }
                        None => {}
                    }
                }
                match found {
                    Some(known) if same_hash(&known.hash, &presented) => {
                        self.confirm(master, id, &presented, &known, may_vouch)
                            .await
                    }
                    _ => Ok(None),
                }
            }
        }
    }

    /// The database's word on a token whose hash the copy matched. When
    /// the master cannot be reached (its breaker is open: it refused, or a
    /// probe went unanswered; a busy one answers others and vouches for
    /// nothing), the copy's, if `may_vouch`, it was read whole in the last
    /// [`VOUCHES_FOR`], it still holds the token with this hash, and the
    /// token has not expired: a token cannot be revoked through this
    /// replica meanwhile either.
    async fn confirm(
        &self,
        master: &Pool,
        id: &str,
        presented: &str,
        known: &Known,
        may_vouch: bool,
    ) -> Result<Option<Principal>, AuthError> {
        match lookup(master, id, presented).await {
            Ok(Some(principal)) => {
                if self.vouching.swap(false, Ordering::Relaxed) {
                    tracing::info!("the master database answers token lookups again");
                }
                Ok(Some(principal))
            }
            Ok(None) => {
                self.vouching.store(false, Ordering::Relaxed);
                // Revoked or expired since the copy was read: it learns so.
                let mut copy = self.copy.write().unwrap_or_else(|p| p.into_inner());
                copy.live.remove(id);
                if copy.absent.len() < ABSENT_KEPT {
                    copy.absent.insert(id.to_string());
                }
                Ok(None)
            }
            Err(e @ DbError::Unavailable(_))
                if may_vouch && master.unreachable() && self.copy_holds(id, &known.hash) =>
            {
                if known.expired() {
                    return Ok(None);
                }
                if !self.vouching.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "the master database cannot be reached; the token copy vouches for genuine tokens on requests that change nothing");
                }
                Ok(known.principal.clone())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the copy, read whole in the last [`VOUCHES_FOR`], holds live
    /// token `id` with `hash`.
    fn copy_holds(&self, id: &str, hash: &str) -> bool {
        let copy = self.copy.read().unwrap_or_else(|p| p.into_inner());
        copy.read_whole_at
            .is_some_and(|at| at.elapsed() < VOUCHES_FOR)
            && copy.live.get(id).is_some_and(|k| k.hash == hash)
    }

    fn seen(&self, id: &str) -> Seen {
        let copy = self.copy.read().unwrap_or_else(|p| p.into_inner());
        match copy.live.get(id) {
            Some(known) => Seen::Known(known.clone()),
            None if copy.absent.contains(id) => Seen::Absent,
            None => Seen::Unknown,
        }
    }

    /// Reads the live tokens again when the copy is older than [`REFRESH`];
    /// one caller reads, the others wait for it.
    async fn read_if_stale(&self, master: &Pool) -> Result<(), DbError> {
        let fresh = |copy: &Copy| copy.read_at.is_some_and(|t| t.elapsed() < REFRESH);
        if fresh(&self.copy.read().unwrap_or_else(|p| p.into_inner())) {
            return Ok(());
        }
        let _reading = self.reading.lock().await;
        if fresh(&self.copy.read().unwrap_or_else(|p| p.into_inner())) {
            return Ok(());
        }
        let live_tokens = format!(
            "SELECT token_id, token_hash, name, role, expires_at FROM api_tokens WHERE {}",
            live(1)
        );
        let rows = match ask(master, &live_tokens, &[now()]).await {
            Ok(rows) => rows,
            // The copy as it was still tells made-up tokens from genuine
            // ones while the database is away; the next request reads again.
            Err(e)
                if self
                    .copy
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .read_at
                    .is_some() =>
            {
                tracing::warn!(error = %e, "could not read the token table again; using the copy");
                // Tried again in a second, not on every request meanwhile.
                let mut copy = self.copy.write().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                copy.read_at = Some(
                    now.checked_sub(REFRESH - REREAD_AFTER_FAILURE)
                        .unwrap_or(now),
                );
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let live = rows
            .rows
            .iter()
            .filter_map(|row| match row.split_first() {
                Some((Value::Text(id), rest)) => Some((id.clone(), Known::from_row(rest)?)),
                _ => None,
            })
            .collect();
        *self.copy.write().unwrap_or_else(|p| p.into_inner()) = Copy {
            read_at: Some(Instant::now()),
            read_whole_at: Some(Instant::now()),
            live,
            absent: HashSet::new(),
        };
        Ok(())
    }
}

fn same_hash(stored: &str, presented: &str) -> bool {
    bool::from(presented.as_bytes().ct_eq(stored.as_bytes()))
}

/// Live token `id` as the copy would hold it, if there is one.
async fn lookup_any(master: &Pool, id: &str) -> Result<Option<Known>, DbError> {
    let sql = format!(
        "SELECT token_hash, name, role, expires_at FROM api_tokens WHERE token_id = $1 AND {}",
        live(2)
    );
    let rows = ask(master, &sql, &[Value::Text(id.into()), now()]).await?;
    Ok(rows.rows.first().and_then(|r| Known::from_row(r)))
}

/// The principal of live token `id` whose hash is `presented`: the
/// database's word, so a token revoked (or expired) since the copy was read
/// is refused.
async fn lookup(master: &Pool, id: &str, presented: &str) -> Result<Option<Principal>, DbError> {
    let sql = format!(
        "SELECT name, role, token_hash FROM api_tokens WHERE token_id = $1 AND {}",
        live(2)
    );
    let rows = ask(master, &sql, &[Value::Text(id.into()), now()]).await?;
    let Some(row) = rows.rows.first() else {
        return Ok(None);
    };
    let (Value::Text(name), Value::Text(role), Value::Text(stored)) = (&row[0], &row[1], &row[2])
    else {
        return Ok(None);
    };
    if !same_hash(stored, presented) {
        return Ok(None);
    }
    Ok(Role::parse(role).map(|role| Principal {
        name: name.clone(),
        role,
    }))
}
