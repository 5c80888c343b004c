//! `neo:ops/queue`: enqueue jobs on queues the manifest grants, list and
//! replay their dead letters.

use crate::bindings::neo::ops::queue as wit;
use crate::bindings::{ErrorCode, WitError};
use crate::caps::db::may_use_tenant;
use crate::runtime::state::StoreState;
use crate::triggers::queue::{self, EnqueueError, Job};

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
        let tenant = self.call.tenant.as_deref();
        queue::enqueue(&self.call.services.kv, &queue, tenant, &payload)
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
        if !may_use_tenant(&self.call, &tenant) {
            return Err(WitError::denied(format!(
                "plugin \"{}\" has no db grant for tenant \"{tenant}\"",
                self.call.plugin.name
            )));
        }
        let services = &self.call.services;
        match services.db.tenant_exists(&tenant).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(WitError::new(
                    ErrorCode::NotFound,
                    format!("no tenant named \"{tenant}\""),
                ));
            }
            Err(e) => {
                tracing::error!(plugin = %self.call.plugin.name, error = %e, "tenant lookup failed");
                return Err(WitError::new(
                    ErrorCode::Unavailable,
                    "database unavailable",
                ));
            }
        }
        queue::enqueue(&services.kv, &queue, Some(&tenant), &payload)
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
