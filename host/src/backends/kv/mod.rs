//! Key-value store: Redis (`REDIS_URL`, `redis.rs`) or an in-process map
//! with TTLs and lists (`memory.rs`), with the same semantics. Every key is
//! stored under the deployment prefix, so tests and deployments sharing one
//! Redis never see each other's keys; locks live in the host namespace.

mod memory;
mod redis;

use std::time::Duration;

use memory::MemoryKv;
use redis::RedisKv;

pub use crate::manifest::HOST_NAMESPACE;

/// Where a lock lives: in the host's namespace, out of every plugin grant's
/// reach (a plugin names its locks, the host owns the keys).
fn lock_key(name: &str) -> String {
    format!("{HOST_NAMESPACE}lock:{name}")
}

/// How long a readiness ping may take.
pub const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// What one list element costs the host beyond its bytes (a `Vec`), counted
/// against a plugin's limit so a list of millions of empty elements is
/// refused too.
pub const ELEMENT_OVERHEAD: usize = 32;

/// Every kv call is bounded in time.
pub const KV_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("kv unavailable")]
    Unavailable,
    #[error("{0}")]
    WrongType(String),
    /// The answer would be over the caller's byte limit; nothing was read.
    #[error("the answer is over {limit} bytes")]
    TooLarge { limit: usize },
}

/// What the kv keeps across a restart of its store: every queue, retry and
/// dead letter lives there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Redis's append-only file.
    AppendOnly,
    /// Redis's periodic snapshots only: a restart loses what changed since
    /// the last one.
    Snapshots,
    /// Redis keeps nothing on disk: a restart loses everything.
    Nothing,
    /// Redis did not say (unreachable, or `CONFIG` refused).
    Unknown,
    /// The in-process kv: it ends with the process.
    InProcess,
}

impl Persistence {
    /// From `INFO persistence` and the `save` setting, if Redis gave it.
    fn of(info: &str, save: Option<&str>) -> Self {
        if info.lines().any(|l| l.trim_end() == "aof_enabled:1") {
            return Self::AppendOnly;
        }
        match save.map(str::trim) {
            Some("") => Self::Nothing,
            Some(_) => Self::Snapshots,
            None => Self::Unknown,
        }
    }

    /// Its name in the readiness document plugins read.
    pub fn name(self) -> &'static str {
        match self {
            Self::AppendOnly => "aof",
            Self::Snapshots => "rdb",
            Self::Nothing => "none",
            Self::Unknown => "unknown",
            Self::InProcess => "memory",
        }
    }
}

/// What [`Kv::release_due`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    pub moved: u64,
    /// When the soonest member left is due (ms since the epoch), if any.
    pub next_due_ms: Option<i64>,
}

pub struct Kv {
    prefix: String,
    backend: Backend,
}

enum Backend {
    Redis(RedisKv),
    Memory(MemoryKv),
}

impl Kv {
    pub async fn connect(redis_url: Option<&str>, prefix: &str) -> anyhow::Result<Self> {
        let backend = match redis_url {
            Some(url) => Backend::Redis(RedisKv::connect(url).await?),
            None => Backend::Memory(MemoryKv::default()),
        };
        Ok(Self {
            prefix: prefix.to_string(),
            backend,
        })
    }

    /// As [`RedisKv::unreached`]: Redis that `connect` could not reach,
    /// connected on first use.
    pub fn unreached(redis_url: &str, prefix: &str) -> anyhow::Result<Self> {
        Ok(Self {
            prefix: prefix.to_string(),
            backend: Backend::Redis(RedisKv::unreached(redis_url)?),
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

    pub async fn ping(&self) -> bool {
        match &self.backend {
            Backend::Redis(r) => r.ping().await,
            Backend::Memory(_) => true,
        }
    }

    pub async fn persistence(&self) -> Persistence {
        match &self.backend {
            Backend::Redis(r) => r.persistence().await,
            Backend::Memory(_) => Persistence::InProcess,
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let k = self.key(key);
        match &self.backend {
            Backend::Redis(r) => r.get(k).await,
            Backend::Memory(m) => m.get(&k),
        }
    }

    /// Like [`Kv::get`] for a plugin: a value over `limit` bytes (its memory
    /// limit) is refused before any of it reaches the host.
    pub async fn get_within(&self, key: &str, limit: usize) -> Result<Option<Vec<u8>>, KvError> {
        let k = self.key(key);
        match &self.backend {
            Backend::Redis(r) => r.get_within(k, limit).await,
            Backend::Memory(m) => m.get_within(&k, limit),
        }
    }

    pub async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), KvError> {
        let k = self.key(key);
        match &self.backend {
            Backend::Redis(r) => r.set(k, value, ttl).await,
            Backend::Memory(m) => m.set(k, value, ttl),
        }
    }

    /// Sets only when absent; true when set.
    pub async fn set_nx(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, KvError> {
        let k = self.key(key);
        match &self.backend {
            Backend::Redis(r) => r.set_nx(k, value, ttl).await,
            Backend::Memory(m) => m.set_nx(k, value, ttl),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<bool, KvError> {
        let k = self.key(key);
        match &self.backend {
            Backend::Redis(r) => r.delete(k).await,
            Backend::Memory(m) => m.delete(&k),
        }
    }

    pub async fn incr(&self, key: &str, by: i64) -> Result<i64, KvError> {
        let k = self.key(key);
        match &self.backend {
            Backend::Redis(r) => r.incr(k, by).await,
            Backend::Memory(m) => m.incr(k, by),
        }
    }

    pub async fn expire(&self, key: &str, ttl: Duration) -> Result<bool, KvError> {
        let k = self.key(key);
        match &self.backend {
            Backend::Redis(r) => r.expire(k, ttl).await,
            Backend::Memory(m) => m.expire(&k, ttl),
        }
    }

    /// Milliseconds to live; None when the key is missing or never expires.
    pub async fn ttl(&self, key: &str) -> Result<Option<u64>, KvError> {
        let k = self.key(key);
        match &self.backend {
            Backend::Redis(r) => r.ttl(k).await,
            Backend::Memory(m) => m.ttl(&k),
        }
    }

    /// Pushes values onto the head of a list; returns the new length.
    pub async fn list_push(&self, key: &str, values: &[Vec<u8>]) -> Result<u64, KvError> {
        if values.is_empty() {
            return self.list_len(key).await;
        }
        let k = self.key(key);
        match &self.backend {
            Backend::Redis(r) => r.list_push(k, values).await,
            Backend::Memory(m) => m.list_push(&k, values),
        }
    }

    pub async fn list_len(&self, key: &str) -> Result<u64, KvError> {
        let k = self.key(key);
        match &self.backend {
            Backend::Redis(r) => r.list_len(k).await,
            Backend::Memory(m) => m.list_len(&k),
        }
    }

    /// Keeps only elements `start..=stop` (negative counts from the end).
    pub async fn list_trim(&self, key: &str, start: i64, stop: i64) -> Result<(), KvError> {
        let k = self.key(key);
        match &self.backend {
            Backend::Redis(r) => r.list_trim(k, start, stop).await,
            Backend::Memory(m) => m.list_trim(&k, start, stop),
        }
    }

    /// Elements `start..=stop` (negative counts from the end), head first.
    pub async fn list_range(
        &self,
        key: &str,
        start: i64,
        stop: i64,
    ) -> Result<Vec<Vec<u8>>, KvError> {
        let k = self.key(key);
        match &self.backend {
            Backend::Redis(r) => r.list_range(k, start, stop).await,
            Backend::Memory(m) => m.list_range(&k, start, stop),
        }
    }

    /// Like [`Kv::list_range`] for a plugin: elements past `limit` bytes in
    /// all (its memory limit) refuse the whole range, and the host holds at
    /// most that much of it. One atomic read, as `LRANGE` is.
    pub async fn list_range_within(
        &self,
        key: &str,
        start: i64,
        stop: i64,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, KvError> {
        let k = self.key(key);
        match &self.backend {
            Backend::Redis(r) => r.list_range_within(k, start, stop, limit).await,
            Backend::Memory(m) => m.list_range_within(&k, start, stop, limit),
        }
    }

    /// Removes up to `count` occurrences of `value` from a list (0: all).
    pub async fn list_remove(&self, key: &str, value: &[u8], count: i64) -> Result<u64, KvError> {
        let k = self.key(key);
        match &self.backend {
            Backend::Redis(r) => r.list_remove(k, value, count).await,
            Backend::Memory(m) => m.list_remove(&k, value, count),
        }
    }

    /// Atomically moves the oldest element of `from` to the head of `to`, so
    /// exactly one consumer gets it and it is not lost while being worked on.
    pub async fn list_move_oldest(&self, from: &str, to: &str) -> Result<Option<Vec<u8>>, KvError> {
        let (f, t) = (self.key(from), self.key(to));
        match &self.backend {
            Backend::Redis(r) => r.list_move_oldest(f, t).await,
            Backend::Memory(m) => m.list_move_oldest(&f, &t),
        }
    }

    /// Atomically removes one `old` from list `from` and, only if it was
    /// there, pushes `new` onto the head of list `to`; true when it moved.
    /// Repeating it after a lost reply moves nothing twice, so a consumer
    /// can retry it until Redis answers.
    pub async fn list_replace(
        &self,
        from: &str,
        old: &[u8],
        to: &str,
        new: &[u8],
    ) -> Result<bool, KvError> {
        let (f, t) = (self.key(from), self.key(to));
        match &self.backend {
            Backend::Redis(r) => r.list_replace(f, old, t, new).await,
            Backend::Memory(m) => m.list_replace(&f, old, &t, new),
        }
    }

    /// Atomically removes one `old` from list `from` and, only if it was
    /// there, adds `new` to sorted set `to` due at `due_ms`; true when it
    /// moved. Like [`Kv::list_replace`], safe to repeat after a lost reply.
    pub async fn list_defer(
        &self,
        from: &str,
        old: &[u8],
        (to, due_ms): (&str, i64),
        new: &[u8],
    ) -> Result<bool, KvError> {
        let (f, t) = (self.key(from), self.key(to));
        match &self.backend {
            Backend::Redis(r) => r.list_defer(f, old, (t, due_ms), new).await,
            Backend::Memory(m) => m.list_defer(&f, old, (&t, due_ms), new),
        }
    }

    /// Atomically moves up to `limit` members of sorted set `from` due by
    /// `now_ms` onto the head of list `to`, soonest due nearest the tail
    /// (the end consumers take from), and brings up to `limit` members due
    /// after `latest_ms` (set aside by a clock running ahead) forward to
    /// it; returns how many moved and when the soonest left is due.
    pub async fn release_due(
        &self,
        from: &str,
        to: &str,
        (now_ms, latest_ms): (i64, i64),
        limit: u32,
    ) -> Result<Released, KvError> {
        let (f, t) = (self.key(from), self.key(to));
        let window = (now_ms, latest_ms.max(now_ms));
        match &self.backend {
            Backend::Redis(r) => r.release_due(f, t, window, limit).await,
            Backend::Memory(m) => m.release_due(&f, &t, window, limit),
        }
    }

    /// Members `start..=stop` of a sorted set (negative counts from the
    /// end), soonest first, each with its score.
    pub async fn sorted_range(
        &self,
        key: &str,
        start: i64,
        stop: i64,
    ) -> Result<Vec<(Vec<u8>, i64)>, KvError> {
        let k = self.key(key);
        match &self.backend {
            Backend::Redis(r) => r.sorted_range(k, start, stop).await,
            Backend::Memory(m) => m.sorted_range(&k, start, stop),
        }
    }

    /// How many members a sorted set holds.
    pub async fn sorted_len(&self, key: &str) -> Result<u64, KvError> {
        let k = self.key(key);
        match &self.backend {
            Backend::Redis(r) => r.sorted_len(k).await,
            Backend::Memory(m) => m.sorted_len(&k),
        }
    }

    /// Takes a lock; returns its token when acquired.
    pub async fn lock(&self, name: &str, ttl: Duration) -> Result<Option<String>, KvError> {
        let token = Self::lock_token();
        Ok(self.lock_as(name, &token, ttl).await?.then_some(token))
    }

    /// A fresh token for [`Kv::lock_as`].
    pub fn lock_token() -> String {
        uuid::Uuid::new_v4().to_string()
    }

    /// Takes a lock with a token the caller chose (and could record before
    /// asking, in case the reply is lost); true when acquired.
    pub async fn lock_as(&self, name: &str, token: &str, ttl: Duration) -> Result<bool, KvError> {
        self.set_nx(&lock_key(name), token.as_bytes(), ttl).await
    }

    /// Releases a lock if `token` still holds it.
    pub async fn unlock(&self, name: &str, token: &str) -> Result<bool, KvError> {
        self.release_held(&lock_key(name), token).await
    }

    /// Deletes `key` if it still holds `token` (a lock, a replica's claim
    /// on its name).
    pub async fn release_held(&self, key: &str, token: &str) -> Result<bool, KvError> {
        let k = self.key(key);
        match &self.backend {
            Backend::Redis(r) => r.unlock(k, token).await,
            Backend::Memory(m) => m.unlock(&k, token),
        }
    }

    /// Extends a lock held with `token` to expire `ttl` from now; false when
    /// the lock expired or another holder has it.
    pub async fn extend_lock(
        &self,
        name: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, KvError> {
        self.extend_held(&lock_key(name), token, ttl).await
    }

    /// Has `key` expire `ttl` from now if it holds `token`; false when it
    /// expired or holds another token.
    pub async fn extend_held(
        &self,
        key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, KvError> {
        let k = self.key(key);
        match &self.backend {
            Backend::Redis(r) => r.extend_lock(k, token, ttl).await,
            Backend::Memory(m) => m.extend_lock(k, token, ttl),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persistence_is_read_from_info_and_the_save_setting() {
        let info = |aof: u8| format!("# Persistence\r\nloading:0\r\naof_enabled:{aof}\r\n");
        assert_eq!(Persistence::of(&info(1), Some("")), Persistence::AppendOnly);
        assert_eq!(Persistence::of(&info(1), None), Persistence::AppendOnly);
        assert_eq!(
            Persistence::of(&info(0), Some("3600 1 300 100")),
            Persistence::Snapshots
        );
        assert_eq!(Persistence::of(&info(0), Some("")), Persistence::Nothing);
        assert_eq!(Persistence::of(&info(0), None), Persistence::Unknown);
    }

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
        kv.list_push("p", &[vec![1], vec![2], vec![1]])
            .await
            .unwrap();
        assert!(kv.list_replace("p", &[1], "q", &[7]).await.unwrap());
        assert!(!kv.list_replace("p", &[3], "q", &[8]).await.unwrap());
        assert_eq!(
            kv.list_range("p", 0, -1).await.unwrap(),
            vec![vec![2], vec![1]]
        );
        assert_eq!(kv.list_range("q", 0, -1).await.unwrap(), vec![vec![7]]);
    }

    #[tokio::test]
    async fn a_range_counts_each_element_against_the_limit() {
        let kv = Kv::connect(None, "t:").await.unwrap();
        kv.list_push("l", &[vec![1], vec![2], vec![3]])
            .await
            .unwrap();
        let whole = 3 * (1 + ELEMENT_OVERHEAD);
        assert_eq!(
            kv.list_range_within("l", 0, -1, whole).await.unwrap().len(),
            3
        );
        assert!(matches!(
            kv.list_range_within("l", 0, -1, whole - 1).await,
            Err(KvError::TooLarge { limit }) if limit == whole - 1
        ));
        assert!(matches!(kv.get_within("none", 0).await, Ok(None)));
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
