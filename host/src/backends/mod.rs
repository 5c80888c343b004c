//! The production and embedded implementations behind each capability.
//! Capabilities (`crate::caps`) check grants, then call these.

pub mod db;
pub mod kv;
pub mod mail;
pub mod public_dns;
pub mod queue;

/// A backend that could not be reached yet (connection refused or timed
/// out, a server still starting up, its connection slots full): an error
/// that passes by itself, which `serve` waits out at start. Any other error
/// (a wrong password, a database that does not exist, a bad URL) does not.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(pub String);

/// `message` as an [`Unreachable`] error when `passes`, else a plain one.
pub(crate) fn connect_error(message: String, passes: bool) -> anyhow::Error {
    if passes {
        anyhow::Error::new(Unreachable(message))
    } else {
        anyhow::Error::msg(message)
    }
}
