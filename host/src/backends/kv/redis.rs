//! The Redis kv backend: one multiplexed connection that reconnects by
//! itself; every call is bounded by [`KV_TIMEOUT`]. Keys arrive prefixed.

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::io::tcp::{TcpSettings, socket2};
use std::time::Duration;

use super::{KV_TIMEOUT, KvError, PING_TIMEOUT, Persistence, Released};
use neo_ops_text::redact::for_log as redact_url;

const EXTEND: &str = r#"if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) else return 0 end"#;
/// Removes one `ARGV[1]` from list `KEYS[1]` and, only if it was there,
/// pushes `ARGV[2]` onto list `KEYS[2]`. The destination's type is checked
/// first: Redis does not undo a script's earlier writes when a later one
/// fails, and an element removed but not pushed would be lost.
const REPLACE: &str = r#"local t = redis.call("TYPE", KEYS[2]).ok
if t ~= "list" and t ~= "none" then return redis.error_reply("WRONGTYPE Operation against a key holding the wrong kind of value") end
if redis.call("LREM", KEYS[1], 1, ARGV[1]) == 1 then redis.call("LPUSH", KEYS[2], ARGV[2]) return 1 else return 0 end"#;
/// Removes one `ARGV[1]` from list `KEYS[1]` and, only if it was there,
/// adds `ARGV[2]` to sorted set `KEYS[2]` scored `ARGV[3]` (checked first,
/// as in [`REPLACE`]).
const DEFER: &str = r#"local t = redis.call("TYPE", KEYS[2]).ok
if t ~= "zset" and t ~= "none" then return redis.error_reply("WRONGTYPE Operation against a key holding the wrong kind of value") end
if redis.call("LREM", KEYS[1], 1, ARGV[1]) == 1 then redis.call("ZADD", KEYS[2], ARGV[3], ARGV[2]) return 1 else return 0 end"#;
/// Moves up to `ARGV[2]` members of sorted set `KEYS[1]` scored at most
/// `ARGV[1]`, soonest first, onto the head of list `KEYS[2]`, and rescores
/// up to `ARGV[2]` members scored over `ARGV[3]` to it; answers how many
/// moved and the soonest score left ("" when none).
const RELEASE: &str = r#"local t = redis.call("TYPE", KEYS[2]).ok
if t ~= "list" and t ~= "none" then return redis.error_reply("WRONGTYPE Operation against a key holding the wrong kind of value") end
local due = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", ARGV[1], "LIMIT", 0, tonumber(ARGV[2]))
for _, m in ipairs(due) do
  redis.call("ZREM", KEYS[1], m)
  redis.call("LPUSH", KEYS[2], m)
end
for _, m in ipairs(redis.call("ZRANGEBYSCORE", KEYS[1], "(" .. ARGV[3], "+inf", "LIMIT", 0, tonumber(ARGV[2]))) do
  redis.call("ZADD", KEYS[1], ARGV[3], m)
end
local soonest = redis.call("ZRANGE", KEYS[1], 0, 0, "WITHSCORES")
return {#due, soonest[2] or ""}"#;
/// `GET` refused with `TOOLARGE` when the value is over `ARGV[1]` bytes.
const GET_WITHIN: &str = r#"local n = redis.call("STRLEN", KEYS[1])
if n > tonumber(ARGV[1]) then return redis.error_reply("TOOLARGE " .. n) end
return redis.call("GET", KEYS[1])"#;
/// `LRANGE KEYS[1] ARGV[1] ARGV[2]` read 128 elements at a time inside one
/// script (so as atomic as `LRANGE`), refused with `TOOLARGE` once the
/// elements add up to more than `ARGV[3]` bytes, each counted `ARGV[4]`
/// bytes more than its length (what holding it costs the host): the host
/// never receives more than that.
const RANGE_WITHIN: &str = r#"local len = redis.call("LLEN", KEYS[1])
local first, last, limit, each = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if first < 0 then first = math.max(len + first, 0) end
if last < 0 then last = len + last end
if last >= len then last = len - 1 end
local out, bytes = {}, 0
while first <= last do
  for _, v in ipairs(redis.call("LRANGE", KEYS[1], first, math.min(first + 127, last))) do
    bytes = bytes + #v + each
    if bytes > limit then return redis.error_reply("TOOLARGE " .. bytes) end
    out[#out + 1] = v
  end
  first = first + 128
end
return out"#;
const UNLOCK: &str = r#"if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end"#;

impl From<redis::RedisError> for KvError {
    fn from(e: redis::RedisError) -> Self {
        if e.code() == Some("TOOLARGE") {
            // Only the `*_within` calls raise it; they put the limit back.
            KvError::TooLarge { limit: 0 }
        } else if e.kind() == redis::ErrorKind::ResponseError
            && e.detail().is_some_and(|d| d.contains("not an integer"))
        {
            // INCR on a value that is not an integer: the plugin's mistake,
            // not an outage, and worded as the in-process kv words it.
            KvError::WrongType("value is not an integer".into())
        } else if e.kind() == redis::ErrorKind::ResponseError
            && e.detail().is_some_and(|d| d.contains("would overflow"))
        {
            KvError::WrongType("increment would overflow".into())
        } else if e.kind() == redis::ErrorKind::TypeError || e.code() == Some("WRONGTYPE") {
            KvError::WrongType("operation against a key holding the wrong kind of value".into())
        } else {
            tracing::warn!(error = %e, "redis call failed");
            KvError::Unavailable
        }
    }
}

/// How the connection comes back after an outage: short connect and
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
        .set_tcp_settings(tcp_settings())
}

/// The TCP under each connection: small commands go out at once (no Nagle
/// delay), and a connection whose peer vanished without a reset (a failover
/// that blackholes the old address) is closed by the kernel within seconds,
/// so the manager reconnects. A response timeout alone does not make it
/// reconnect: every call timed out for the quarter of an hour the kernel
/// takes to give up by default.
fn tcp_settings() -> TcpSettings {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(5))
        .with_interval(Duration::from_secs(2));
    let settings = TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(keepalive);
    // Linux's TCP_USER_TIMEOUT; elsewhere keepalive alone.
    #[cfg(target_os = "linux")]
    let settings = settings.set_user_timeout(Duration::from_secs(10));
    settings
}

/// Puts the caller's limit into a `TOOLARGE` refusal.
fn within<T>(limit: usize, r: Result<T, KvError>) -> Result<T, KvError> {
    r.map_err(|e| match e {
        KvError::TooLarge { .. } => KvError::TooLarge { limit },
        e => e,
    })
}

pub struct RedisKv {
    client: redis::Client,
    /// Made by the first call (`connect` makes it at once); the manager
    /// then reconnects by itself.
    conn: tokio::sync::OnceCell<ConnectionManager>,
}

/// Runs one call on a cloned connection, bounded by [`KV_TIMEOUT`].
macro_rules! call {
    ($self:ident, |$c:ident| $body:expr) => {{
        match tokio::time::timeout(KV_TIMEOUT, async {
            let mut $c = $self.conn().await?;
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

impl RedisKv {
    /// A connection made now: an unreachable Redis fails the call.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let kv = Self::unreached(url)?;
        tokio::time::timeout(KV_TIMEOUT, kv.conn())
            .await
            .map_err(|_| {
                let message = format!("connecting to redis {}: timed out", redact_url(url));
                crate::backends::connect_error(message, true)
            })?
            .map_err(|e| {
                let message = format!("connecting to redis {}: {e}", redact_url(url));
                // Not there yet, or still loading its data set: it passes.
                let passes = e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_refusal()
                    || e.is_connection_dropped()
                    || e.kind() == redis::ErrorKind::BusyLoadingError;
                crate::backends::connect_error(message, passes)
            })?;
        Ok(kv)
    }

    /// A connection made on first use, for a command that reports on
    /// Redis (preflight) when `connect` could not reach it: each call tries
    /// again, and fails as an outage until Redis answers.
    pub fn unreached(url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("bad REDIS_URL {}: {e}", redact_url(url)))?;
        Ok(Self {
            client,
            conn: tokio::sync::OnceCell::new(),
        })
    }

    async fn conn(&self) -> redis::RedisResult<ConnectionManager> {
        let made = self.conn.get_or_try_init(|| {
            ConnectionManager::new_with_config(self.client.clone(), reconnect_policy())
        });
        made.await.cloned()
    }

    pub async fn ping(&self) -> bool {
        let ping = async {
            let mut c = self.conn().await?;
            redis::cmd("PING").query_async::<String>(&mut c).await
        };
        matches!(tokio::time::timeout(PING_TIMEOUT, ping).await, Ok(Ok(_)))
    }

    /// What this Redis keeps on disk: `INFO persistence` says whether the
    /// append-only file is on, `CONFIG GET save` whether snapshots are
    /// (managed services often refuse `CONFIG`: then it is not known).
    pub async fn persistence(&self) -> Persistence {
        let asked = async {
            let mut c = self.conn().await?;
            let info: String = redis::cmd("INFO")
                .arg("persistence")
                .query_async(&mut c)
                .await?;
            let save: redis::RedisResult<std::collections::HashMap<String, String>> =
                redis::cmd("CONFIG")
                    .arg("GET")
                    .arg("save")
                    .query_async(&mut c)
                    .await;
            redis::RedisResult::Ok((info, save.ok().and_then(|mut m| m.remove("save"))))
        };
        match tokio::time::timeout(PING_TIMEOUT, asked).await {
            Ok(Ok((info, save))) => Persistence::of(&info, save.as_deref()),
            _ => Persistence::Unknown,
        }
    }

    pub async fn get(&self, k: String) -> Result<Option<Vec<u8>>, KvError> {
        call!(self, |c| c.get(k).await)
    }

    pub async fn get_within(&self, k: String, limit: usize) -> Result<Option<Vec<u8>>, KvError> {
        within(
            limit,
            call!(self, |c| {
                redis::Script::new(GET_WITHIN)
                    .key(&k)
                    .arg(limit)
                    .invoke_async(&mut c)
                    .await
            }),
        )
    }

    pub async fn set(&self, k: String, value: &[u8], ttl: Option<Duration>) -> Result<(), KvError> {
        call!(self, |c| match ttl {
            Some(t) => c.pset_ex(k, value, t.as_millis().max(1) as u64).await,
            None => c.set(k, value).await,
        })
    }

    pub async fn set_nx(&self, k: String, value: &[u8], ttl: Duration) -> Result<bool, KvError> {
        call!(self, |c| {
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

    pub async fn delete(&self, k: String) -> Result<bool, KvError> {
        call!(self, |c| c.del::<_, u64>(k).await.map(|n| n > 0))
    }

    pub async fn incr(&self, k: String, by: i64) -> Result<i64, KvError> {
        call!(self, |c| c.incr(k, by).await)
    }

    pub async fn expire(&self, k: String, ttl: Duration) -> Result<bool, KvError> {
        call!(self, |c| c.pexpire(k, ttl.as_millis().max(1) as i64).await)
    }

    pub async fn ttl(&self, k: String) -> Result<Option<u64>, KvError> {
        call!(self, |c| {
            let ms: i64 = redis::cmd("PTTL").arg(&k).query_async(&mut c).await?;
            Ok((ms >= 0).then_some(ms as u64))
        })
    }

    pub async fn list_push(&self, k: String, values: &[Vec<u8>]) -> Result<u64, KvError> {
        call!(self, |c| c.lpush(k, values).await)
    }

    pub async fn list_len(&self, k: String) -> Result<u64, KvError> {
        call!(self, |c| c.llen(k).await)
    }

    pub async fn list_trim(&self, k: String, start: i64, stop: i64) -> Result<(), KvError> {
        call!(self, |c| c.ltrim(k, start as isize, stop as isize).await)
    }

    pub async fn list_range(
        &self,
        k: String,
        start: i64,
        stop: i64,
    ) -> Result<Vec<Vec<u8>>, KvError> {
        call!(self, |c| c.lrange(k, start as isize, stop as isize).await)
    }

    pub async fn list_range_within(
        &self,
        k: String,
        start: i64,
        stop: i64,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, KvError> {
        within(
            limit,
            call!(self, |c| {
                redis::Script::new(RANGE_WITHIN)
                    .key(&k)
                    .arg(start)
                    .arg(stop)
                    .arg(limit)
                    .arg(super::ELEMENT_OVERHEAD)
                    .invoke_async(&mut c)
                    .await
            }),
        )
    }

    pub async fn list_remove(&self, k: String, value: &[u8], count: i64) -> Result<u64, KvError> {
        call!(self, |c| c.lrem(k, count as isize, value).await)
    }

    pub async fn list_move_oldest(&self, f: String, t: String) -> Result<Option<Vec<u8>>, KvError> {
        call!(self, |c| {
            redis::cmd("LMOVE")
                .arg(&f)
                .arg(&t)
                .arg("RIGHT")
                .arg("LEFT")
                .query_async(&mut c)
                .await
        })
    }

    pub async fn list_replace(
        &self,
        from: String,
        old: &[u8],
        to: String,
        new: &[u8],
    ) -> Result<bool, KvError> {
        call!(self, |c| {
            let n: i64 = redis::Script::new(REPLACE)
                .key(&from)
                .key(&to)
                .arg(old)
                .arg(new)
                .invoke_async(&mut c)
                .await?;
            Ok(n == 1)
        })
    }

    pub async fn list_defer(
        &self,
        from: String,
        old: &[u8],
        (to, due_ms): (String, i64),
        new: &[u8],
    ) -> Result<bool, KvError> {
        call!(self, |c| {
            let n: i64 = redis::Script::new(DEFER)
                .key(&from)
                .key(&to)
                .arg(old)
                .arg(new)
                .arg(due_ms)
                .invoke_async(&mut c)
                .await?;
            Ok(n == 1)
        })
    }

    pub async fn release_due(
        &self,
        from: String,
        to: String,
        (now_ms, latest_ms): (i64, i64),
        limit: u32,
    ) -> Result<Released, KvError> {
        let (moved, soonest): (u64, String) = call!(self, |c| {
            redis::Script::new(RELEASE)
                .key(&from)
                .key(&to)
                .arg(now_ms)
                .arg(limit)
                .arg(latest_ms)
                .invoke_async(&mut c)
                .await
        })?;
        // Scores are whole milliseconds; one written as a float by some
        // other client is read as its whole part.
        let next_due_ms = (!soonest.is_empty())
            .then(|| soonest.parse::<f64>().ok().map(|s| s as i64))
            .flatten();
        Ok(Released { moved, next_due_ms })
    }

    pub async fn sorted_range(
        &self,
        k: String,
        start: i64,
        stop: i64,
    ) -> Result<Vec<(Vec<u8>, i64)>, KvError> {
        let members: Vec<(Vec<u8>, f64)> = call!(self, |c| {
            c.zrange_withscores(k, start as isize, stop as isize).await
        })?;
        Ok(members.into_iter().map(|(m, s)| (m, s as i64)).collect())
    }

    pub async fn sorted_len(&self, k: String) -> Result<u64, KvError> {
        call!(self, |c| c.zcard(k).await)
    }

    pub async fn unlock(&self, k: String, token: &str) -> Result<bool, KvError> {
        call!(self, |c| {
            let n: i64 = redis::Script::new(UNLOCK)
                .key(&k)
                .arg(token)
                .invoke_async(&mut c)
                .await?;
            Ok(n == 1)
        })
    }

    pub async fn extend_lock(
        &self,
        k: String,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, KvError> {
        let ms = ttl.as_millis().max(1) as u64;
        call!(self, |c| {
            let n: i64 = redis::Script::new(EXTEND)
                .key(&k)
                .arg(token)
                .arg(ms)
                .invoke_async(&mut c)
                .await?;
            Ok(n == 1)
        })
    }
}
