//! `neo:ops/config`: the plugin's own manifest settings, and only the
//! environment variables its manifest lists.

use crate::bindings::WitError;
use crate::bindings::neo::ops::config as wit;
use crate::caps::state::StoreState;

impl wit::Host for StoreState {
    async fn get(&mut self, key: String) -> Option<String> {
        self.call.plugin.config.get(&key).cloned()
    }

    async fn env(&mut self, name: String) -> Result<Option<String>, WitError> {
        let plugin = &self.call.plugin;
        if !plugin.grants.env.iter().any(|e| e == &name) {
            return Err(WitError::denied(format!(
                "plugin \"{}\" has no env grant for \"{name}\"",
                plugin.name
            )));
        }
        Ok(std::env::var(&name).ok())
    }
}
