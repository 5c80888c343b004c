//! `neo:ops/queue`: enqueue jobs on queues the manifest grants.

use crate::bindings::neo::ops::queue as wit;
use crate::bindings::{ErrorCode, WitError};
use crate::runtime::state::StoreState;
use crate::triggers::queue::{EnqueueError, enqueue};

impl wit::Host for StoreState {
    async fn enqueue(&mut self, queue: String, payload: String) -> Result<String, WitError> {
        let plugin = &self.call.plugin;
        if !plugin.grants.queues.iter().any(|q| q == &queue) {
            return Err(WitError::denied(format!(
                "plugin \"{}\" has no grant to enqueue on \"{queue}\"",
                plugin.name
            )));
        }
        enqueue(&self.call.services.kv, &queue, &payload)
            .await
            .map_err(|e| match e {
                EnqueueError::Invalid(m) => WitError::invalid(m),
                EnqueueError::Unavailable => {
                    WitError::new(ErrorCode::Unavailable, "queue unavailable")
                }
            })
    }
}
