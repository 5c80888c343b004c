//! Key-value store: Redis (`REDIS_URL`) or an in-process map with TTLs and
//! lists. Every key is stored under the deployment prefix, so tests and
//! deployments sharing one Redis never see each other's keys.

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use neo_ops_text::redact::for_log as redact_url;

/// Keys under this prefix belong to the host (queues, dead letters); no
/// plugin grant reaches them.
pub const HOST_NAMESPACE: &str = "__";

/// Where a lock lives: in the host's namespace, out of every plugin grant's
/// reach (a plugin names its locks, the host owns the keys).
fn lock_key(name: &str) -> String {
    format!("{HOST_NAMESPACE}lock:{name}")
}

/// How the Redis connection comes back after an outage: short connect and
/// response timeouts and a short capped backoff, so kv (and `/readyz`) is
/// back within a couple of seconds of Redis (redis-rs's defaults grow the
/// delay a hundredfold per try, up to a minute).
fn reconnect_policy() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_secs(1))
        .set_response_timeout(Duration::from_secs(3))
        .set_number_of_retries(2)
        .set_factor(2)
        .set_exponent_base(2)
        .set_max_delay(250)
}

/// How long a readiness ping may take.
pub const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// Every kv call is bounded in time.
pub const KV_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("kv unavailable")]
    Unavailable,
    #[error("{0}")]
    WrongType(String),
}

impl From<redis::RedisError> for KvError {
    fn from(e: redis::RedisError) -> Self {
        if e.kind() == redis::ErrorKind::TypeError || e.code() == Some("WRONGTYPE") {
            KvError::WrongType("operation against a key holding the wrong kind of value".into())
        } else {
            tracing::warn!(error = %e, "redis call failed");
            KvError::Unavailable
        }
    }
}

pub struct Kv {
    prefix: String,
    backend: Backend,
}

enum Backend {
    Redis(ConnectionManager),
    Memory(Mutex<MemStore>),
}

/// Runs one Redis call on a cloned connection, bounded by [`KV_TIMEOUT`].
macro_rules! redis_call {
    ($kv:ident, |$c:ident| $body:expr) => {{
        let mut $c = $kv.conn();
        match tokio::time::timeout(KV_TIMEOUT, async {
            let r: redis::RedisResult<_> = $body;
            r
        })
        .await
        {
            Ok(r) => r.map_err(KvError::from),
            Err(_) => Err(KvError::Unavailable),
        }
    }};
}

const EXTEND: &str = r#"if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) else return 0 end"#;
const UNLOCK: &str = r#"if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end"#;

impl Kv {
    pub async fn connect(redis_url: Option<&str>, prefix: &str) -> anyhow::Result<Self> {
        let backend = match redis_url {
            Some(url) => {
                let client = redis::Client::open(url)
                    .map_err(|e| anyhow::anyhow!("bad REDIS_URL {}: {e}", redact_url(url)))?;
                let cm = tokio::time::timeout(
                    KV_TIMEOUT,
                    ConnectionManager::new_with_config(client, reconnect_policy()),
                )
                .await
                .map_err(|_| anyhow::anyhow!("connecting to redis {}: timed out", redact_url(url)))?
                .map_err(|e| anyhow::anyhow!("connecting to redis {}: {e}", redact_url(url)))?;
                Backend::Redis(cm)
            }
            None => Backend::Memory(Mutex::new(MemStore::default())),
        };
        Ok(Self {
            prefix: prefix.to_string(),
            backend,
        })
    }

    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Redis(_) => "redis",
            Backend::Memory(_) => "memory",
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    fn conn(&self) -> ConnectionManager {
        match &self.backend {
            Backend::Redis(cm) => cm.clone(),
            Backend::Memory(_) => unreachable!("redis call on the memory backend"),
        }
    }

    fn mem<T>(&self, f: impl FnOnce(&mut MemStore) -> Result<T, KvError>) -> Result<T, KvError> {
        let Backend::Memory(m) = &self.backend else {
            unreachable!("memory call on redis backend")
        };
        let mut store = m.lock().unwrap_or_else(|p| p.into_inner());
        store.sweep();
        f(&mut store)
    }

    pub async fn ping(&self) -> bool {
        match &self.backend {
            Backend::Redis(_) => {
                let mut c = self.conn();
                let cmd = redis::cmd("PING");
                let ping = cmd.query_async::<String>(&mut c);
                matches!(tokio::time::timeout(PING_TIMEOUT, ping).await, Ok(Ok(_)))
            }
            Backend::Memory(_) => true,
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let k = self.key(key);
        match &self.backend {
            Backend::Redis(_) => redis_call!(self, |c| c.get(k).await),
            Backend::Memory(_) => self.mem(|m| m.bytes(&k).map(|b| b.cloned())),
        }
    }

    pub async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), KvError> {
        let k = self.key(key);
        match &self.backend {
            Backend::Redis(_) => {
                redis_call!(self, |c| match ttl {
                    Some(t) => c.pset_ex(k, value, t.as_millis().max(1) as u64).await,
                    None => c.set(k, value).await,
                })
            }
            Backend::Memory(_) => self.mem(|m| {
                m.put(k, Val::Bytes(value.to_vec()), ttl);
                Ok(())
            }),
        }
    }

    /// Sets only when absent; true when set.
    pub async fn set_nx(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, KvError> {
        let k = self.key(key);
        match &self.backend {
            Backend::Redis(_) => {
                redis_call!(self, |c| {
                    let r: Option<String> = redis::cmd("SET")
                        .arg(&k)
                        .arg(value)
                        .arg("NX")
                        .arg("PX")
                        .arg(ttl.as_millis().max(1) as u64)
                        .query_async(&mut c)
                        .await?;
                    Ok(r.is_some())
                })
            }
            Backend::Memory(_) => self.mem(|m| {
                if m.live(&k).is_some() {
                    return Ok(false);
                }
                m.put(k, Val::Bytes(value.to_vec()), Some(ttl));
                Ok(true)
            }),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<bool, KvError> {
        let k = self.key(key);
        match &self.backend {
            Backend::Redis(_) => redis_call!(self, |c| c.del::<_, u64>(k).await.map(|n| n > 0)),
            Backend::Memory(_) => self.mem(|m| Ok(m.map.remove(&k).is_some_and(|e| !e.expired()))),
        }
    }

    pub async fn incr(&self, key: &str, by: i64) -> Result<i64, KvError> {
        let k = self.key(key);
        match &self.backend {
            Backend::Redis(_) => redis_call!(self, |c| c.incr(k, by).await),
            Backend::Memory(_) => self.mem(|m| {
                let current = match m.bytes(&k)? {
                    None => 0,
                    Some(b) => std::str::from_utf8(b)
                        .ok()
                        .and_then(|s| s.parse::<i64>().ok())
                        .ok_or_else(|| KvError::WrongType("value is not an integer".into()))?,
                };
                let next = current
                    .checked_add(by)
                    .ok_or_else(|| KvError::WrongType("increment would overflow".into()))?;
                let expires = m.live(&k).and_then(|e| e.expires);
                m.map.insert(
                    k,
                    Entry {
                        val: Val::Bytes(next.to_string().into_bytes()),
                        expires,
                    },
                );
                Ok(next)
            }),
        }
    }

    pub async fn expire(&self, key: &str, ttl: Duration) -> Result<bool, KvError> {
        let k = self.key(key);
        match &self.backend {
            Backend::Redis(_) => {
                redis_call!(self, |c| c.pexpire(k, ttl.as_millis().max(1) as i64).await)
            }
            Backend::Memory(_) => self.mem(|m| match m.map.get_mut(&k) {
                Some(e) if !e.expired() => {
                    e.expires = Some(Instant::now() + ttl);
                    Ok(true)
                }
                _ => Ok(false),
            }),
        }
    }

    /// Milliseconds to live; None when the key is missing or never expires.
    pub async fn ttl(&self, key: &str) -> Result<Option<u64>, KvError> {
        let k = self.key(key);
        match &self.backend {
            Backend::Redis(_) => {
                redis_call!(self, |c| {
                    let ms: i64 = redis::cmd("PTTL").arg(&k).query_async(&mut c).await?;
                    Ok((ms >= 0).then_some(ms as u64))
                })
            }
            Backend::Memory(_) => self.mem(|m| {
                Ok(m.live(&k)
                    .and_then(|e| e.expires)
                    .map(|t| t.saturating_duration_since(Instant::now()).as_millis() as u64))
            }),
        }
    }

    pub async fn list_push(&self, key: &str, values: &[Vec<u8>]) -> Result<u64, KvError> {
        let k = self.key(key);
        if values.is_empty() {
            return self.list_len(key).await;
        }
        match &self.backend {
            Backend::Redis(_) => redis_call!(self, |c| c.lpush(k, values).await),
            Backend::Memory(_) => self.mem(|m| {
                let list = m.list_mut(&k)?;
                for v in values {
                    list.push_front(v.clone());
                }
                Ok(list.len() as u64)
            }),
        }
    }

    pub async fn list_len(&self, key: &str) -> Result<u64, KvError> {
        let k = self.key(key);
        match &self.backend {
            Backend::Redis(_) => redis_call!(self, |c| c.llen(k).await),
            Backend::Memory(_) => self.mem(|m| Ok(m.list(&k)?.map_or(0, |l| l.len() as u64))),
        }
    }

    pub async fn list_trim(&self, key: &str, start: i64, stop: i64) -> Result<(), KvError> {
        let k = self.key(key);
        match &self.backend {
            Backend::Redis(_) => {
                redis_call!(self, |c| c.ltrim(k, start as isize, stop as isize).await)
            }
            Backend::Memory(_) => self.mem(|m| {
                let Some(list) = m.list(&k)? else {
                    return Ok(());
                };
                let kept: VecDeque<Vec<u8>> = match span(list.len(), start, stop) {
                    Some((a, b)) => list.range(a..=b).cloned().collect(),
                    None => VecDeque::new(),
                };
                if kept.is_empty() {
                    m.map.remove(&k);
                } else {
                    *m.list_mut(&k)? = kept;
                }
                Ok(())
            }),
        }
    }

    pub async fn list_range(
        &self,
        key: &str,
        start: i64,
        stop: i64,
    ) -> Result<Vec<Vec<u8>>, KvError> {
        let k = self.key(key);
        match &self.backend {
            Backend::Redis(_) => {
                redis_call!(self, |c| c.lrange(k, start as isize, stop as isize).await)
            }
            Backend::Memory(_) => self.mem(|m| {
                let Some(list) = m.list(&k)? else {
                    return Ok(vec![]);
                };
                Ok(match span(list.len(), start, stop) {
                    Some((a, b)) => list.range(a..=b).cloned().collect(),
                    None => vec![],
                })
            }),
        }
    }

    /// Removes up to `count` occurrences of `value` from a list.
    pub async fn list_remove(&self, key: &str, value: &[u8], count: i64) -> Result<u64, KvError> {
        let k = self.key(key);
        match &self.backend {
            Backend::Redis(_) => redis_call!(self, |c| c.lrem(k, count as isize, value).await),
            Backend::Memory(_) => self.mem(|m| {
                let Some(list) = m.list(&k)? else {
                    return Ok(0);
                };
                let mut removed = 0;
                let mut kept = VecDeque::with_capacity(list.len());
                for item in list.iter() {
                    if item == value && (count == 0 || removed < count.unsigned_abs()) {
                        removed += 1;
                    } else {
                        kept.push_back(item.clone());
                    }
                }
                *m.list_mut(&k)? = kept;
                Ok(removed)
            }),
        }
    }

    /// Atomically moves the oldest element of `from` to the head of `to`, so
    /// exactly one consumer gets it and it is not lost while being worked on.
    pub async fn list_move_oldest(&self, from: &str, to: &str) -> Result<Option<Vec<u8>>, KvError> {
        let (f, t) = (self.key(from), self.key(to));
        match &self.backend {
            Backend::Redis(_) => {
                redis_call!(self, |c| {
                    redis::cmd("LMOVE")
                        .arg(&f)
                        .arg(&t)
                        .arg("RIGHT")
                        .arg("LEFT")
                        .query_async(&mut c)
                        .await
                })
            }
            Backend::Memory(_) => self.mem(|m| {
                let Some(item) = m.list_mut(&f)?.pop_back() else {
                    return Ok(None);
                };
                m.list_mut(&t)?.push_front(item.clone());
                Ok(Some(item))
            }),
        }
    }

    /// Takes a lock; returns its token when acquired.
    pub async fn lock(&self, name: &str, ttl: Duration) -> Result<Option<String>, KvError> {
        let token = uuid::Uuid::new_v4().to_string();
        let key = lock_key(name);
        Ok(self
            .set_nx(&key, token.as_bytes(), ttl)
            .await?
            .then_some(token))
    }

    /// Releases a lock if `token` still holds it.
    pub async fn unlock(&self, name: &str, token: &str) -> Result<bool, KvError> {
        let k = self.key(&lock_key(name));
        match &self.backend {
            Backend::Redis(_) => {
                redis_call!(self, |c| {
                    let n: i64 = redis::Script::new(UNLOCK)
                        .key(&k)
                        .arg(token)
                        .invoke_async(&mut c)
                        .await?;
                    Ok(n == 1)
                })
            }
            Backend::Memory(_) => self.mem(|m| {
                if m.bytes(&k)?.is_some_and(|v| v == token.as_bytes()) {
                    m.map.remove(&k);
                    Ok(true)
                } else {
                    Ok(false)
                }
            }),
        }
    }
}

impl Kv {
    /// Extends a lock held with `token` to expire `ttl` from now; false when
    /// the lock expired or another holder has it.
    pub async fn extend_lock(
        &self,
        name: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, KvError> {
        let k = self.key(&lock_key(name));
        let ms = ttl.as_millis().max(1) as u64;
        match &self.backend {
            Backend::Redis(_) => redis_call!(self, |c| {
                let n: i64 = redis::Script::new(EXTEND)
                    .key(&k)
                    .arg(token)
                    .arg(ms)
                    .invoke_async(&mut c)
                    .await?;
                Ok(n == 1)
            }),
            Backend::Memory(_) => self.mem(|m| {
                if m.bytes(&k)?.is_some_and(|v| v == token.as_bytes()) {
                    m.put(k, Val::Bytes(token.as_bytes().to_vec()), Some(ttl));
                    Ok(true)
                } else {
                    Ok(false)
                }
            }),
        }
    }
}

/// Redis-style inclusive range (negative from the end) clamped to a length.
fn span(len: usize, start: i64, stop: i64) -> Option<(usize, usize)> {
    let len = len as i64;
    let norm = |i: i64| if i < 0 { len + i } else { i };
    let (a, b) = (norm(start).max(0), norm(stop).min(len - 1));
    (a <= b && len > 0).then_some((a as usize, b as usize))
}

// ---- in-process store ------------------------------------------------------

enum Val {
    Bytes(Vec<u8>),
    List(VecDeque<Vec<u8>>),
}

struct Entry {
    val: Val,
    expires: Option<Instant>,
}

impl Entry {
    fn expired(&self) -> bool {
        self.expires.is_some_and(|t| t <= Instant::now())
    }
}

#[derive(Default)]
struct MemStore {
    map: HashMap<String, Entry>,
    ops: u64,
}

impl MemStore {
    /// Drops expired entries now and then, so memory tracks live keys.
    fn sweep(&mut self) {
        self.ops += 1;
        if self.ops.is_multiple_of(1024) {
            self.map.retain(|_, e| !e.expired());
        }
    }

    fn live(&self, k: &str) -> Option<&Entry> {
        self.map.get(k).filter(|e| !e.expired())
    }

    fn put(&mut self, k: String, val: Val, ttl: Option<Duration>) {
        let expires = ttl.map(|t| Instant::now() + t);
        self.map.insert(k, Entry { val, expires });
    }

    fn bytes(&self, k: &str) -> Result<Option<&Vec<u8>>, KvError> {
        match self.live(k).map(|e| &e.val) {
            None => Ok(None),
            Some(Val::Bytes(b)) => Ok(Some(b)),
            Some(Val::List(_)) => Err(KvError::WrongType("key holds a list".into())),
        }
    }

    fn list(&self, k: &str) -> Result<Option<&VecDeque<Vec<u8>>>, KvError> {
        match self.live(k).map(|e| &e.val) {
            None => Ok(None),
            Some(Val::List(l)) => Ok(Some(l)),
            Some(Val::Bytes(_)) => Err(KvError::WrongType("key holds a value, not a list".into())),
        }
    }

    fn list_mut(&mut self, k: &str) -> Result<&mut VecDeque<Vec<u8>>, KvError> {
        if self.live(k).is_none() {
            self.map.insert(
                k.to_string(),
                Entry {
                    val: Val::List(VecDeque::new()),
                    expires: None,
                },
            );
        }
        match &mut self.map.get_mut(k).expect("inserted above").val {
            Val::List(l) => Ok(l),
            Val::Bytes(_) => Err(KvError::WrongType("key holds a value, not a list".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_lists_trim_and_range_like_redis() {
        let kv = Kv::connect(None, "t:").await.unwrap();
        for i in 0..10u8 {
            kv.list_push("l", &[vec![i]]).await.unwrap();
        }
        kv.list_trim("l", 0, 4).await.unwrap();
        let items = kv.list_range("l", 0, -1).await.unwrap();
        assert_eq!(items, vec![vec![9], vec![8], vec![7], vec![6], vec![5]]);
        assert_eq!(kv.list_move_oldest("l", "p").await.unwrap(), Some(vec![5]));
        assert_eq!(kv.list_range("p", 0, -1).await.unwrap(), vec![vec![5]]);
        assert_eq!(kv.list_remove("p", &[5], 1).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn memory_ttl_and_locks() {
        let kv = Kv::connect(None, "t:").await.unwrap();
        kv.set("a", b"1", Some(Duration::from_millis(30)))
            .await
            .unwrap();
        assert!(kv.ttl("a").await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(kv.get("a").await.unwrap(), None);
        let token = kv.lock("x", Duration::from_secs(5)).await.unwrap().unwrap();
        assert!(
            kv.lock("x", Duration::from_secs(5))
                .await
                .unwrap()
                .is_none()
        );
        assert!(!kv.unlock("x", "wrong").await.unwrap());
        assert!(kv.unlock("x", &token).await.unwrap());
        assert_eq!(kv.incr("n", 2).await.unwrap(), 2);
        assert_eq!(kv.incr("n", -5).await.unwrap(), -3);
    }
}
