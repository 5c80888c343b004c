//! Rules both sides of the sandbox build: the host (manifest, settings, log
//! masking) and the guest SDK (plugin config, bundles, CSP reports). Pure
//! code, no I/O, so it compiles natively and for wasm alike and
//! one definition serves both.

pub mod address;
pub mod audit;
pub mod duration;
pub mod redact;
