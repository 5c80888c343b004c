//! `neo:ops/queue`: enqueue jobs on queues the manifest grants, list and
//! replay their dead letters.

use crate::backends::queue::{self, EnqueueError, Job};
use crate::bindings::neo::ops::queue as wit;
use crate::bindings::{ErrorCode, WitError};
use crate::caps::db::may_use_tenant;
use crate::caps::state::{CallContext, StoreState};
use std::sync::atomic::Ordering;

impl StoreState {
    fn check_queue_grant(&self, queue: &str) -> Result<(), WitError> {
        let plugin = &self.call.plugin;
        if plugin.grants.queues.iter().any(|q| q == queue) {
            Ok(())
        } else {
            Err(WitError::denied(format!(
                "plugin \"{}\" has no grant for queue \"{queue}\"",
                plugin.name
            )))
        }
    }

    /// [`Self::check_queue_grant`] for a call that puts a job on the
    /// queue: refused in a command whose queues are its own memory, where
    /// the job would end with it, unrun.
    fn check_queue_reaches_a_server(&self, queue: &str) -> Result<(), WitError> {
        self.check_queue_grant(queue)?;
        if self
            .call
            .services
            .queues_end_with_command
            .load(Ordering::Relaxed)
        {
            // Not `unavailable`: no retry would reach the server's memory.
            return Err(WitError::new(
                ErrorCode::Conflict,
                format!(
                    "not queued on \"{queue}\": without REDIS_URL the queues live in the serving \
                     process's memory, which this command cannot reach (queue it through the \
                     server, or give both REDIS_URL)"
                ),
            ));
        }
        Ok(())
    }
}

/// A job may carry `tenant` only when the plugin's db grants cover it and it
/// exists.
async fn check_tenant(call: &CallContext, tenant: &str) -> Result<(), WitError> {
    if !may_use_tenant(call, tenant) {
        return Err(WitError::denied(format!(
            "plugin \"{}\" has no db grant for tenant \"{tenant}\"",
            call.plugin.name
        )));
    }
    match call.services.db.tenant_exists(tenant).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(WitError::new(
            ErrorCode::NotFound,
            format!("no tenant named \"{tenant}\""),
        )),
        Err(e) => {
            tracing::error!(plugin = %call.plugin.name, error = %e, "tenant lookup failed");
            Err(WitError::new(
                ErrorCode::Unavailable,
                "database unavailable",
            ))
        }
    }
}

/// A queue call, given up on at the invocation's I/O deadline
/// ([`crate::caps::state::io_deadline`]): a Redis that hangs leaves the
/// plugin time to act on it (a fan-out to name the tenants it could not
/// queue), though whether the call took effect is then unknown.
async fn queue_call<T>(
    io_deadline: tokio::time::Instant,
    call: impl Future<Output = Result<T, WitError>>,
) -> Result<T, WitError> {
    tokio::time::timeout_at(io_deadline, call)
        .await
        .unwrap_or_else(|_| {
            Err(WitError::new(
                ErrorCode::Unavailable,
                "the queue did not answer in time; whether the call took effect is unknown",
            ))
        })
}

/// A call about one dead letter, as the plugin gets its answer.
async fn one_letter(
    io_deadline: tokio::time::Instant,
    call: impl Future<Output = Result<Option<Job>, EnqueueError>>,
) -> Result<Option<wit::DeadLetter>, WitError> {
    let letter = queue_call(io_deadline, async { call.await.map_err(to_wit_error) }).await?;
    Ok(letter.map(to_dead_letter))
}

fn to_wit_error(e: EnqueueError) -> WitError {
    match e {
        EnqueueError::Invalid(m) => WitError::invalid(m),
        EnqueueError::Unavailable => WitError::new(ErrorCode::Unavailable, "queue unavailable"),
    }
}

fn to_dead_letter(job: Job) -> wit::DeadLetter {
    wit::DeadLetter {
        id: job.id,
        queue: job.queue,
        tenant: job.tenant,
        payload: job.payload,
        attempts: job.attempts,
        last_error: job.last_error,
        enqueued_at: job.enqueued_at,
        dead_at: job.dead_at,
    }
}

impl wit::Host for StoreState {
    async fn enqueue(&mut self, queue: String, payload: String) -> Result<String, WitError> {
        self.check_queue_reaches_a_server(&queue)?;
        let tenant = self.call.tenant.clone();
        let call = &self.call;
        queue_call(call.io_deadline(), async {
            if let Some(tenant) = &tenant {
                // The invocation's tenant may be whatever a caller typed: the
                // job carries it only if this plugin could act for that
                // tenant itself.
                check_tenant(call, tenant).await?;
            }
            queue::enqueue(&call.services.kv, &queue, tenant.as_deref(), &payload)
                .await
                .map_err(to_wit_error)
        })
        .await
    }

    async fn enqueue_for_tenant(
        &mut self,
        queue: String,
        tenant: String,
        payload: String,
    ) -> Result<String, WitError> {
        self.check_queue_reaches_a_server(&queue)?;
        let call = &self.call;
        queue_call(call.io_deadline(), async {
            check_tenant(call, &tenant).await?;
            queue::enqueue(&call.services.kv, &queue, Some(&tenant), &payload)
                .await
                .map_err(to_wit_error)
        })
        .await
    }

    async fn dead_letters(
        &mut self,
        queue: String,
        limit: u32,
    ) -> Result<Vec<wit::DeadLetter>, WitError> {
        self.check_queue_grant(&queue)?;
        let kv = &self.call.services.kv;
        // Half the plugin's memory: the rest holds its own data, stack and
        // the copy it decodes from.
        let memory = self.call.plugin.limits.memory_bytes / 2;
        let jobs = queue_call(self.call.io_deadline(), async {
            queue::dead_letters(kv, &queue, limit.min(1000), memory)
                .await
                .map_err(to_wit_error)
        })
        .await?;
        Ok(jobs.into_iter().map(to_dead_letter).collect())
    }

    async fn find_dead_letter(
        &mut self,
        queue: String,
        id: String,
    ) -> Result<Option<wit::DeadLetter>, WitError> {
        self.check_queue_grant(&queue)?;
        let kv = &self.call.services.kv;
        let found = queue::dead_letter(kv, &queue, &id);
        one_letter(self.call.io_deadline(), found).await
    }

    async fn replay(
        &mut self,
        queue: String,
        id: String,
    ) -> Result<Option<wit::DeadLetter>, WitError> {
        self.check_queue_reaches_a_server(&queue)?;
        let kv = &self.call.services.kv;
        let replayed = queue::replay(kv, &queue, &id);
        one_letter(self.call.io_deadline(), replayed).await
    }
}
