//! neo-ops: runs the operations tooling of the neo POS platform as sandboxed
//! WebAssembly components. See ARCHITECTURE.md for the code map.

pub mod audit_log;
pub mod auth;
pub mod backends;
pub mod bindings;
pub mod caps;
pub mod cli;
pub mod demo;
pub mod manifest;
pub mod metrics;
pub mod plugin_build;
pub mod preflight;
pub mod private_fs;
pub mod progress;
pub mod runtime;
pub mod server;
pub mod services;
pub mod settings;
pub mod tenant_logs;
pub mod triggers;
