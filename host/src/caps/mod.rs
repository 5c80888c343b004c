//! One module per capability. Each implements the generated `Host` trait for
//! the store state and checks the plugin's grant before any I/O; expected
//! failures go back to the plugin as WIT errors.

pub mod audit;
pub mod config;
pub mod db;
pub mod files;
pub mod host_info;
pub mod kv;
pub mod log;
pub mod mail;
pub mod outbound_http;
pub mod queue;
pub mod sql_policy;
pub mod state;

impl crate::bindings::neo::ops::types::Host for crate::caps::state::StoreState {}
