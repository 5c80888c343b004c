//! The production and embedded implementations behind each capability.
//! Capabilities (`crate::caps`) check grants, then call these.

pub mod db;
pub mod kv;
pub mod mail;
pub mod public_dns;
pub mod queue;
