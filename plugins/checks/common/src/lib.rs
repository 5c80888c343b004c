//! What the preflight checks (`plugins/checks/*`) share: outcome builders,
//! settings from the manifest (config first, then granted env vars), the live
//! tenants, and plain HTTP GETs with redacted URLs.

pub mod http;
pub mod outcome;
pub mod settings;
pub mod tenants;

pub use outcome::{describe, fail, pass, skip, warn};
