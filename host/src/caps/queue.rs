//! `neo:ops/queue`: enqueue jobs on queues the manifest grants, list and
//! replay their dead letters.

use crate::backends::queue::{self, EnqueueError, Job};
use crate::bindings::neo::ops::queue as wit;
use crate::bindings::{ErrorCode, WitError};
use crate::caps::db::may_use_tenant;
use crate::caps::state::{CallContext, StoreState};

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
        self.check_queue_grant(&queue)?;
        let tenant = self.call.tenant.clone();
        if let Some(tenant) = &tenant {
            // The invocation's tenant may be whatever a caller typed: the job
            // carries it only if this plugin could act for that tenant itself.
            check_tenant(&self.call, tenant).await?;
        }
        queue::enqueue(&self.call.services.kv, &queue, tenant.as_deref(), &payload)
            .await
            .map_err(to_wit_error)
    }

    async fn enqueue_for_tenant(
        &mut self,
        queue: String,
        tenant: String,
        payload: String,
    ) -> Result<String, WitError> {
        self.check_queue_grant(&queue)?;
        check_tenant(&self.call, &tenant).await?;
        queue::enqueue(&self.call.services.kv, &queue, Some(&tenant), &payload)
            .await
            .map_err(to_wit_error)
    }

    async fn dead_letters(
        &mut self,
        queue: String,
        limit: u32,
    ) -> Result<Vec<wit::DeadLetter>, WitError> {
        self.check_queue_grant(&queue)?;
        let jobs = queue::dead_letters(&self.call.services.kv, &queue, limit.min(1000))
            .await
            .map_err(to_wit_error)?;
        Ok(jobs.into_iter().map(to_dead_letter).collect())
    }

    async fn replay(
        &mut self,
        queue: String,
        id: String,
    ) -> Result<Option<wit::DeadLetter>, WitError> {
        self.check_queue_grant(&queue)?;
        let replayed = queue::replay(&self.call.services.kv, &queue, &id)
            .await
            .map_err(to_wit_error)?;
        Ok(replayed.map(to_dead_letter))
    }
}
