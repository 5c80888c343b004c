//! Postgres connections for statements, handed back without a round trip.
//!
//! sqlx's pool pings every connection as it comes back (a task spawned and
//! a Sync/ReadyForQuery round trip per statement), because it cannot tell a
//! connection whose statement finished from one whose future was dropped
//! half-way. A [`Lease`] can: the code that ran the statement calls
//! [`Lease::release`] once the exchange is complete, and a lease dropped
//! without it (a timeout, a cancelled caller, a broken socket) closes its
//! connection instead of returning it.

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{ACQUIRE_TIMEOUT, DbError};

/// Connections in use or idle, at most (as the sqlx pool's `max_connections`).
pub const MAX_CONNECTIONS: usize = 16;
/// An idle connection older than this is closed rather than reused.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// How often idle connections are looked over for closing.
const REAP_EVERY: Duration = Duration::from_secs(60);
/// An idle connection older than this is pinged before it is handed out, so
/// one a restart or an outage left dead is never given to a statement.
pub const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// How long saying goodbye to the server may take before the socket is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

struct Idle {
    conn: PgConnection,
    since: Instant,
}

/// The statement connections of one database.
pub struct Conns {
    options: PgConnectOptions,
    idle: std::sync::Mutex<Vec<Idle>>,
    permits: Arc<Semaphore>,
    closed: AtomicBool,
}

impl std::fmt::Debug for Conns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conns")
            .field("idle", &self.idle.lock().map(|i| i.len()).unwrap_or(0))
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl Conns {
    pub fn new(options: PgConnectOptions) -> Arc<Self> {
        let conns = Arc::new(Self {
            options,
            idle: std::sync::Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            closed: AtomicBool::new(false),
        });
        // Connections a burst opened do not stay open once traffic stops (a
        // purge over many tenants would otherwise keep some per tenant).
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&conns);
            runtime.spawn(async move {
                loop {
                    tokio::time::sleep(REAP_EVERY).await;
                    match weak.upgrade() {
                        Some(conns) if !conns.closed.load(Ordering::Acquire) => conns.reap(),
                        _ => break,
                    }
                }
            });
        }
        conns
    }

    /// Closes the connections idle for [`IDLE_TIMEOUT`] or more.
    fn reap(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // The stack's bottom holds the longest idle.
        let stale = idle
            .iter()
            .take_while(|i| i.since.elapsed() >= IDLE_TIMEOUT)
            .count();
        let stale: Vec<Idle> = idle.drain(..stale).collect();
        drop(idle);
        for Idle { conn, .. } in stale {
            close_in_background(conn);
        }
    }

    fn pop_idle(&self) -> Option<Idle> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    /// A connection for one statement or transaction: the newest idle one
    /// (pinged if it sat for [`PING_IF_IDLE_FOR`]), else a new one. Waiting
    /// for a free connection and connecting are each bounded by
    /// [`ACQUIRE_TIMEOUT`]. Every connection staying in use that long is
    /// [`DbError::Busy`]: the database answers, so it is not an outage and
    /// does not open the breaker for everyone.
    pub async fn lease(self: &Arc<Self>) -> Result<Lease, DbError> {
        let unavailable = || DbError::Unavailable("database unavailable".into());
        if self.closed.load(Ordering::Acquire) {
            return Err(unavailable());
        }
        let permit =
            match tokio::time::timeout(ACQUIRE_TIMEOUT, self.permits.clone().acquire_owned()).await
            {
                Ok(Ok(permit)) => permit,
                Ok(Err(_closed)) => return Err(unavailable()),
                Err(_) => {
                    return Err(DbError::Busy(
                        "every database connection is in use; try again".into(),
                    ));
                }
            };
        let acquire = async {
            while let Some(Idle { mut conn, since }) = self.pop_idle() {
                let idle_for = since.elapsed();
                if idle_for >= IDLE_TIMEOUT {
                    close_in_background(conn);
                    continue;
                }
                if idle_for >= PING_IF_IDLE_FOR && conn.ping().await.is_err() {
                    continue;
                }
                return Ok(self.leased(conn, permit));
            }
            let mut conn = self.options.connect().await.map_err(|e| {
                tracing::warn!(error = %e, "database unavailable");
                unavailable()
            })?;
            end_statements_on_hang_up(&mut conn).await;
            Ok(self.leased(conn, permit))
        };
        tokio::time::timeout(ACQUIRE_TIMEOUT, acquire)
            .await
            .unwrap_or_else(|_| Err(unavailable()))
    }

    /// Whether the database takes a new connection and answers a ping on
    /// it: asked apart from the leased connections, whose being all busy
    /// says nothing of the database.
    pub async fn probe(&self) -> Result<(), sqlx::Error> {
        let mut conn = self.options.connect().await?;
        conn.ping().await?;
        close_in_background(conn);
        Ok(())
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn leased(self: &Arc<Self>, conn: PgConnection, permit: OwnedSemaphorePermit) -> Lease {
        Lease {
            conn: Some(conn),
            conns: self.clone(),
            _permit: permit,
        }
    }

    /// Closes the idle connections; leases still out close theirs when they
    /// end, and no new lease is given.
    pub async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|e| e.into_inner()));
        for Idle { conn, .. } in idle {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, conn.close()).await;
        }
    }
}

/// One connection, lent for one statement or transaction.
pub struct Lease {
    conn: Option<PgConnection>,
    conns: Arc<Conns>,
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    /// Hands the connection back for reuse: call only once the last exchange
    /// on it has been read to the end (its transaction, if any, finished).
    pub fn release(mut self) {
        let Some(conn) = self.conn.take() else { return };
        if self.conns.closed.load(Ordering::Acquire) {
            close_in_background(conn);
            return;
        }
        self.conns
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Idle {
                conn,
                since: Instant::now(),
            });
    }
}

impl std::ops::Deref for Lease {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        self.conn
            .as_ref()
            .expect("a lease holds its connection until it ends")
    }
}

impl std::ops::DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn
            .as_mut()
            .expect("a lease holds its connection until it ends")
    }
}

impl Drop for Lease {
    /// Not released: the exchange may be half-way, so the connection is not
    /// reused (closing it also ends any transaction left open on it).
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            close_in_background(conn);
        }
    }
}

/// Has the server check each second, while a statement runs, that the host
/// is still there (Postgres 14 and later): a statement the host stopped
/// waiting for, whose connection it closed, then ends instead of running on
/// to the statement timeout with its locks. A server that refuses it (one
/// on Windows does) keeps the connection as it was: warned about once.
async fn end_statements_on_hang_up(conn: &mut PgConnection) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if conn.server_version_num().is_none_or(|v| v < 140_000) {
        return;
    }
    let set = "SET client_connection_check_interval = '1s'";
    if let Err(e) = sqlx::Executor::execute(&mut *conn, set).await
        && !WARNED.swap(true, Ordering::Relaxed)
    {
        tracing::warn!(error = %e, "the database refused client_connection_check_interval; a statement the host gives up on runs on to its timeout");
    }
}

/// Closes a connection politely when a runtime is there to do it, else drops
/// the socket (Postgres then ends the session and any open transaction).
fn close_in_background(conn: PgConnection) {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn(async move {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, conn.close()).await;
            });
        }
        Err(_) => drop(conn),
    }
}
